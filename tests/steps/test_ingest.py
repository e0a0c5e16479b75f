import numpy as np
import pandas as pd
import pytest

from mlpipe.config import Config
from mlpipe.errors import DataError
from mlpipe.steps.ingest import LABEL, IngestReport, add_label, clean, ingest, split_by_time, validate


def make_config(**target) -> Config:
    return Config.model_validate({
        "data": {"source": "x.csv", "timestamp": "t", "group": "g", "features": ["rain", "p"],
                 "ranges": {"p": [900.0, 1100.0]}},
        "target": {"column": "rain", "above": 0.0, "horizon": "2h", **target},
        "split": {"test_fraction": 0.25, "cv_folds": 2},
    })


def frame(hours, rain, group="A", p=1000.0) -> pd.DataFrame:
    start = pd.Timestamp("2020-01-01T00:00:00Z")
    return pd.DataFrame({"t": [(start + pd.Timedelta(hours=h)).isoformat() for h in hours], "g": group,
                         "rain": rain, "p": p})


def labelled(df: pd.DataFrame, config: Config) -> pd.DataFrame:
    report = IngestReport()
    return add_label(clean(validate(df, config, "x.csv"), config, report), config, report)


def test_label_is_the_condition_horizon_later_matched_by_timestamp():
    out = labelled(frame([0, 1, 2, 3], [0.0, 0.0, 0.5, 0.0]), make_config())
    # 00:00 -> 02:00 (rain), 01:00 -> 03:00 (dry); 02:00 and 03:00 have no observation 2 h later
    assert out[LABEL].tolist() == [1, 0]
    assert out["t"].dt.hour.tolist() == [0, 1]


def test_a_gap_in_the_hours_gives_no_label_instead_of_a_row_shift():
    # 03:00 is missing: a row shift would label 01:00 with 04:00's rain; matching by time gives none
    out = labelled(frame([0, 1, 2, 4], [0.0, 0.0, 0.0, 0.7]), make_config())
    assert out["t"].dt.hour.tolist() == [0, 2]
    assert out[LABEL].tolist() == [0, 1]


def test_unsorted_input_gives_the_same_labels_as_sorted():
    df = frame(range(10), [0.0, 0.1, 0.0, 0.0, 0.3, 0.0, 0.2, 0.0, 0.0, 0.4])
    shuffled = df.sample(frac=1.0, random_state=3)
    config = make_config()
    a, b = labelled(df, config), labelled(shuffled, config)
    pd.testing.assert_frame_equal(a, b)


def test_groups_are_labelled_separately():
    df = pd.concat([frame([0, 1, 2], [0.0, 0.0, 0.0], "A"), frame([0, 1, 2], [0.0, 0.0, 1.0], "B")])
    out = labelled(df, make_config())
    assert dict(zip(out["g"], out[LABEL])) == {"A": 0, "B": 1}


def test_positive_values_rule():
    out = labelled(frame([0, 1, 2, 3], [3.0, 1.0, 1.0, 3.0]), make_config(above=None, positive=[3]))
    assert out[LABEL].tolist() == [0, 1]


def test_impossible_values_become_missing_and_are_counted():
    report = IngestReport()
    config = make_config()
    df = frame([0, 1, 2], [0.0, 0.0, 0.0])
    df["p"] = [0.0, 1000.0, np.inf]
    out = clean(validate(df, config, "x.csv"), config, report)
    assert out["p"].isna().tolist() == [True, False, True]
    assert report.impossible_values == {"p": 2}


def test_exact_duplicates_dropped_and_conflicting_timestamps_reported():
    df = pd.concat([frame([0, 1, 2], [0.0, 0.0, 0.0]), frame([1], [0.0]), frame([2], [0.9])])
    report = IngestReport()
    config = make_config()
    out = clean(validate(df, config, "x.csv"), config, report)
    assert report.exact_duplicates_dropped == 1
    assert report.conflicting_timestamps == 1 and report.conflicting_rows_dropped == 2
    assert out["t"].dt.hour.tolist() == [0, 1]


def test_backward_jumps_are_counted_in_file_order():
    report = IngestReport()
    config = make_config()
    clean(validate(frame([0, 1, 5, 2, 3, 4], [0.0] * 6), config, report), config, report)
    assert report.backward_time_jumps == 1


def test_split_is_by_time_with_an_embargo():
    config = make_config()
    df = labelled(frame(range(14), [0.0, 1.0] * 7), config)  # 12 labelled hours 00..11
    report = IngestReport()
    train, validation, test = split_by_time(df, config, report)
    assert test["t"].min() > validation["t"].max() and validation["t"].min() > train["t"].max()
    assert len(test) == 3  # ceil(0.25 * 12) distinct timestamps
    # rows whose 2 h label lies in the test period (>= 09:00) are dropped: 07:00 and 08:00
    assert report.embargo_dropped == 2
    # validation: the last ceil(0.15 * 7) = 2 of the 7 timestamps before (05:00, 06:00); train rows whose label
    # lies in it (03:00, 04:00) dropped too
    assert validation["t"].dt.hour.tolist() == [5, 6] and report.validation_embargo_dropped == 2
    assert train["t"].dt.hour.tolist() == [0, 1, 2]
    assert (report.train_rows, report.validation_rows, report.test_rows) == (3, 2, 3)


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.drop(columns="p"), r"missing column 'p'"),
    (lambda d: d.assign(p=["1000", "oops", "1001"]), r"column 'p' is not numeric .*'oops'"),
    (lambda d: d.assign(t=["2020-01-01", "yesterday", "2020-01-02"]), r"column 't': 1 timestamps do not parse"),
    (lambda d: d.assign(t=["yesterday", "2020-01-01", "yesterday"]),  # parsed once per distinct value, counted by row
     r"column 't': 2 timestamps do not parse \(first: 'yesterday'\)"),
    (lambda d: d.assign(t=["2020-01-01T00:00+02:00", "2020-01-01T01:00", "2020-01-01T01:00"]),
     r"mixed time zones: 1 timestamps carry a UTC offset and 2 do not"),
    (lambda d: d.iloc[0:0], r"no data rows"),
], ids=["missing-column", "non-numeric", "bad-timestamp", "a-bad-timestamp-twice", "mixed-zones", "header-only"])
def test_schema_errors_name_the_column(mutate, match):
    with pytest.raises(DataError, match=match):
        validate(mutate(frame([0, 1, 2], [0.0, 0.0, 0.0])), make_config(), "x.csv")


def test_one_class_data_is_refused():
    with pytest.raises(DataError, match="one class"):
        ingest(frame(range(100), [0.0] * 100), make_config(), "x.csv")
