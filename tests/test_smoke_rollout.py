import json

from omnidrive_r1.cli import main


def test_rollout_command_runs_the_policy_with_its_tools(toydrive_dir, tiny_policy_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["rollout", "--model", str(tiny_policy_dir), "--data", str(toydrive_dir / "drivelmm" / "test.json"),
                 "--n", "3", "--max-completion-length", "16", "--out", str(out)])
    assert code == 0
    rows = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert all(isinstance(r["response"], str) and isinstance(r["tool_calls"], list) for r in rows)
    assert "3 rollouts" in capsys.readouterr().out
