import json

from omnidrive_r1.cli import main


def test_rollout_command_runs_the_tiny_policy_on_toydrive(tiny_policy_dir, tmp_path, capsys):
    data, out = tmp_path / "toydrive", tmp_path / "run"
    code = main(["rollout", "--model", str(tiny_policy_dir), "--data", str(data), "--n", "3",
                 "--max-new-tokens", "4", "--out", str(out)])
    assert code == 0
    rows = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert all(r["prompt_tokens"] > 100 and isinstance(r["response"], str) for r in rows)
    assert (data / "drivelmm" / "test.json").exists()  # generated on first use
