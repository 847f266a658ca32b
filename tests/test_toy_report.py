"""`make toy-report` judges the learning claim the README makes (`omnidrive_r1/toy/report.py`)."""

from omnidrive_r1.toy import report


def _summary(mcq, iou=0.3):
    return {"mcq_accuracy": mcq, "zoom_iou": iou}


def test_every_seed_must_gain_enough_and_the_mean_more():
    base = _summary(37.0, 0.03)
    good = report.criteria(base, [_summary(60.0), _summary(58.0), _summary(61.0)], [0.9, 0.95, 0.97], None)
    assert all(ok for _, ok in good) and len(good) == 4
    one_weak = report.criteria(base, [_summary(70.0), _summary(48.0), _summary(70.0)], [0.9] * 3, None)
    verdicts = dict((what.split(" (")[0], ok) for what, ok in one_weak)
    assert verdicts["every seed at least +12 points"] is False  # 48.0 is +11
    assert verdicts["mean gain at least +20 points"] is True  # +25 on average
    assert "smallest gain +11.0" in one_weak[0][0]


def test_call_rate_iou_and_the_other_machine_are_judged_too():
    base = _summary(37.0, 0.30)
    checks = report.criteria(base, [_summary(60.0, 0.5), _summary(60.0, 0.25)], [0.9, 0.4],
                             {"base": _summary(35.0), "stage 2": _summary(46.0)})
    verdicts = [ok for _, ok in checks]
    assert verdicts == [True, True, False, False, False]  # call rate 0.4, IoU 0.25 below 0.30, +11 there
    assert "+11.0" in checks[-1][0]


def test_a_seed_that_never_calls_greedily_has_no_iou_and_does_not_meet_the_iou_check():
    base = _summary(37.0, 0.30)
    checks = report.criteria(base, [_summary(60.0, 0.5), _summary(60.0, None)], [0.9, 0.9], None)
    what, ok = checks[3]
    assert ok is False and "1 of 2 seeds without a call" in what and "lowest 0.500" in what
    assert report.criteria(_summary(37.0, None), [_summary(60.0, 0.5)], [0.9], None)[3][1] is False


def test_the_report_runs_each_command_in_its_own_process_and_stops_on_a_failure(tmp_path):
    import pytest

    seconds = report._run(["--help"], tmp_path / "help.log")
    assert seconds >= 0 and "usage" in (tmp_path / "help.log").read_text()
    with pytest.raises(SystemExit, match="failed"):
        report._run(["no-such-command"], tmp_path / "bad.log")
