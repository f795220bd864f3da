import csv

from fer_lightning.loggers import AppendingCSVLogger


def test_csv_metrics_survive_a_second_logger_in_the_same_run_dir(tmp_path):
    first = AppendingCSVLogger(save_dir=tmp_path, name="csv", version="")
    first.log_metrics({"val/accuracy": 0.5}, step=0)
    first.save()
    resumed = AppendingCSVLogger(save_dir=tmp_path, name="csv", version="")
    resumed.log_metrics({"val/accuracy": 0.7, "train/loss": 1.0}, step=1)
    resumed.save()
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["val/accuracy"] for r in rows] == ["0.5", "0.7"]
    assert rows[1]["train/loss"] == "1.0"
