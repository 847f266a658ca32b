"""`make bench`: where a training step's time goes (`python -m omnidrive_r1.bench --help`; docs/performance.md)."""
