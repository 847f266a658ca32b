"""DriveLMM-o1 evaluation: official-parity MCQ extraction, the 12-metric judge, tool-use metrics."""
