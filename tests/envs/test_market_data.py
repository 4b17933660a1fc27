"""Market data loading (CSV errors name file, row and column), shipped series, walk-forward splits."""

from __future__ import annotations

import numpy as np
import pytest

from rpbt.envs.market_data import (
    MarketData,
    MarketDataError,
    infer_bars_per_year,
    load_csv,
    load_shipped,
    walk_forward_split,
)

GOOD = """Date,Open,High,Low,Close,Volume
2020-01-02,10,11,9,10.5,100
2020-01-03,10.5,11,10,10.8,120
2020-01-06,10.8,11.2,10.1,11.0,0
2020-01-07,11.0,11.5,10.9,11.2,90
"""


def write(tmp_path, text, name="bars.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------------- good files


def test_load_good_csv(tmp_path):
    path = write(tmp_path, GOOD)
    md = load_csv(path)
    assert len(md) == 4
    assert md.name == "bars" and md.source == str(path)
    assert md.dates.dtype == np.dtype("datetime64[ns]")
    assert str(md.dates[0])[:10] == "2020-01-02" and str(md.dates[-1])[:10] == "2020-01-07"
    np.testing.assert_allclose(md.close, [10.5, 10.8, 11.0, 11.2])
    np.testing.assert_allclose(md.volume, [100, 120, 0, 90])
    assert md.close.dtype == np.float64
    np.testing.assert_allclose(md.log_returns[1:], np.log([10.8 / 10.5, 11.0 / 10.8, 11.2 / 11.0]))
    assert np.isnan(md.log_returns[0])


def test_columns_case_insensitive_stripped_optional_volume_and_timestamp_alias(tmp_path):
    text = (
        " TIMESTAMP , open,HIGH , Low,CLOSE,Adj Close\n"
        "2020-01-02 10:00,1,2,0.5,1.5,9\n"
        "2020-01-02 11:00,1.5,2,1,1.8,9\n"
    )
    md = load_csv(write(tmp_path, text))
    assert md.volume is None
    np.testing.assert_allclose(md.close, [1.5, 1.8])
    assert md.dates[1] - md.dates[0] == np.timedelta64(1, "h")


def test_day_first_dates_detected(tmp_path):
    # "01.02.2017" is ambiguous; "13.02.2017" only parses day-first, so the whole column is read day-first.
    text = "Time,Open,High,Low,Close\n01.02.2017 00:00,1,1,1,1\n13.02.2017 00:00,1,1,1,1\n"
    md = load_csv(write(tmp_path, text))
    assert [str(d)[:10] for d in md.dates] == ["2017-02-01", "2017-02-13"]


def test_blank_lines_skipped_but_counted_in_line_numbers(tmp_path):
    text = "Date,Open,High,Low,Close\n2020-01-01,1,1,1,1\n\n2020-01-02,1,1,1,1\n2020-01-03,1,1,1,-1\n"
    with pytest.raises(MarketDataError) as err:
        load_csv(write(tmp_path, text))
    # data rows: 1 = 2020-01-01, 2 = blank, 3 = 2020-01-02, 4 = the bad one, on line 5 of the file
    assert "data row 4 (line 5 of the file)" in str(err.value)


# ----------------------------------------------------------------------------------------------- bad files


BAD_CASES = {
    # name: (csv text, row, column, words in the message)
    "unparsable_date": (
        "Date,Open,High,Low,Close\n2020-01-01,1,1,1,1\n2020-01-02,1,1,1,1\nnot-a-date,1,1,1,1\n",
        "data row 3 (line 4 of the file)",
        "'Date'",
        "'not-a-date' is not a date",
    ),
    "empty_date": (
        "Date,Open,High,Low,Close\n2020-01-01,1,1,1,1\n,1,1,1,1\n2020-01-03,1,1,1,1\n",
        "data row 2 (line 3 of the file)",
        "'Date'",
        "is empty",
    ),
    "non_increasing_dates": (
        "Date,Open,High,Low,Close\n2020-01-01,1,1,1,1\n2020-01-03,1,1,1,1\n2020-01-02,1,1,1,1\n",
        "data row 3 (line 4 of the file)",
        "'Date'",
        "strictly increasing",
    ),
    "duplicate_date": (
        "Date,Open,High,Low,Close\n2020-01-01,1,1,1,1\n2020-01-01,1,1,1,1\n",
        "data row 2 (line 3 of the file)",
        "'Date'",
        "not after",
    ),
    "missing_price": (
        "Date,Open,High,Low,Close\n2020-01-01,1,1,1,1\n2020-01-02,1,1,1,\n2020-01-03,1,1,1,1\n",
        "data row 2 (line 3 of the file)",
        "'Close'",
        "is missing",
    ),
    "nan_price": (
        "Date,Open,High,Low,Close\n2020-01-01,1,1,1,1\n2020-01-02,NaN,1,1,1\n",
        "data row 2 (line 3 of the file)",
        "'Open'",
        "not a number",
    ),
    "text_price": (
        "Date,Open,High,Low,Close\n2020-01-01,1,abc,1,1\n2020-01-02,1,1,1,1\n",
        "data row 1 (line 2 of the file)",
        "'High'",
        "'abc' is not a number",
    ),
    "zero_price": (
        "Date,Open,High,Low,Close\n2020-01-01,1,1,1,1\n2020-01-02,1,1,0,1\n",
        "data row 2 (line 3 of the file)",
        "'Low'",
        "not positive",
    ),
    "negative_price": (
        "Date,Open,High,Low,Close\n2020-01-01,1,1,1,1\n2020-01-02,1,1,1,1\n2020-01-03,1,1,1,-2.5\n",
        "data row 3 (line 4 of the file)",
        "'Close'",
        "'-2.5' is not positive",
    ),
    "infinite_price": (
        "Date,Open,High,Low,Close\n2020-01-01,1,1,1,inf\n2020-01-02,1,1,1,1\n",
        "data row 1 (line 2 of the file)",
        "'Close'",
        "not finite",
    ),
    "high_below_low": (
        "Date,Open,High,Low,Close\n2020-01-01,1,2,1,1.5\n2020-01-02,1,0.9,1.1,1\n",
        "data row 2 (line 3 of the file)",
        "'High'",
        "'0.9' is below the row's low",
    ),
    "close_above_high": (
        "Date,Open,High,Low,Close\n2020-01-01,1,2,1,1.5\n2020-01-02,1,2,1,1.5\n2020-01-03,1,2,1,2.5\n",
        "data row 3 (line 4 of the file)",
        "'Close'",
        "'2.5' is outside the row's [low, high] (high 2, low 1, close 2.5)",
    ),
    "close_below_low": (
        "Date,Open,High,Low,Close\n2020-01-01,1,2,1,0.5\n2020-01-02,1,2,1,1.5\n",
        "data row 1 (line 2 of the file)",
        "'Close'",
        "outside the row's [low, high]",
    ),
    "negative_volume": (
        "Date,Open,High,Low,Close,Volume\n2020-01-01,1,1,1,1,5\n2020-01-02,1,1,1,1,-3\n",
        "data row 2 (line 3 of the file)",
        "'Volume'",
        "negative",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_csv_error_names_file_row_column(tmp_path, case):
    text, row, column, words = BAD_CASES[case]
    path = write(tmp_path, text, name=f"{case}.csv")
    with pytest.raises(MarketDataError) as err:
        load_csv(path)
    msg = str(err.value)
    assert str(path) in msg, msg
    assert row in msg, msg
    assert f"column {column}" in msg, msg
    assert words in msg, msg
    assert isinstance(err.value, ValueError)


def test_missing_columns_listed_with_columns_found(tmp_path):
    path = write(tmp_path, "Day,Open,High,Price\n2020-01-01,1,1,1\n2020-01-02,1,1,1\n")
    with pytest.raises(MarketDataError) as err:
        load_csv(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "date (or timestamp / datetime / time)" in msg and "low" in msg and "close" in msg
    assert "columns found in the header: ['Day', 'Open', 'High', 'Price']" in msg


def test_too_few_rows(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(MarketDataError) as err:
        load_csv(path, min_rows=10)
    assert str(path) in str(err.value) and "4 data rows, need at least 10" in str(err.value)
    header_only = write(tmp_path, "Date,Open,High,Low,Close\n", name="header_only.csv")
    with pytest.raises(MarketDataError, match="0 data rows"):
        load_csv(header_only)


def test_missing_and_empty_file(tmp_path):
    with pytest.raises(MarketDataError, match="nope.csv: file not found"):
        load_csv(tmp_path / "nope.csv")
    with pytest.raises(MarketDataError, match="empty.csv: file is empty"):
        load_csv(write(tmp_path, "", name="empty.csv"))


def test_duplicate_columns(tmp_path):
    path = write(tmp_path, "Date,Open,High,Low,Close,close \n2020-01-01,1,1,1,1,1\n2020-01-02,1,1,1,1,1\n")
    with pytest.raises(MarketDataError, match="duplicate column 'close'"):
        load_csv(path)


def test_market_data_constructor_validates():
    dates = np.array(["2020-01-01", "2020-01-02", "2020-01-03"], dtype="datetime64[D]")
    ones = np.ones(3)
    MarketData(dates, ones, ones, ones, ones)
    with pytest.raises(MarketDataError, match="'close' at bar 1"):
        MarketData(dates, ones, ones, ones, np.array([1.0, np.nan, 1.0]))
    with pytest.raises(MarketDataError, match="not strictly increasing at bar 2"):
        MarketData(dates[[0, 1, 1]], ones, ones, ones, ones)
    with pytest.raises(MarketDataError, match="shape"):
        MarketData(dates, ones, ones, ones, ones[:2])


# ----------------------------------------------------------------------------------------------- bars per year


def test_bars_per_year_rule():
    # daily business days (weekend gaps): median spacing 1 day -> 252
    bdays = np.arange("2021-01-04", "2021-12-31", dtype="datetime64[D]")
    bdays = bdays[((bdays.astype(np.int64) + 3) % 7) < 5]
    assert infer_bars_per_year(bdays) == pytest.approx(252.0)
    # daily seven-day market (crypto) -> 365.25
    assert infer_bars_per_year(np.arange("2021-01-01", "2021-03-01", dtype="datetime64[D]")) == pytest.approx(365.25)
    # hourly, 24 bars on weekdays -> 252 * 24
    hours = np.arange("2021-01-04T00", "2021-01-30T00", dtype="datetime64[h]")
    hours = hours[((hours.astype("datetime64[D]").astype(np.int64) + 3) % 7) < 5]
    assert infer_bars_per_year(hours) == pytest.approx(252.0 * 24)
    # hourly stock session 09:30..15:30 (7 bars a weekday) -> 252 * 7
    session = np.array([d + np.timedelta64(570 + 60 * k, "m") for d in bdays[:40] for k in range(7)])
    assert infer_bars_per_year(session) == pytest.approx(252.0 * 7)
    # weekly -> 365.25 / 7
    weeks = np.arange("2021-01-04", "2022-01-04", 7, dtype="datetime64[D]")
    assert infer_bars_per_year(weeks) == pytest.approx(365.25 / 7)


# ----------------------------------------------------------------------------------------------- shipped data


def test_shipped_googl_daily():
    md = load_shipped("googl")
    assert md.name == "googl" and md.source.endswith("STOCKS_GOOGL.csv")
    assert len(md) == 2335
    assert str(md.dates[0])[:10] == "2009-05-22" and str(md.dates[-1])[:10] == "2018-08-29"
    assert 240 <= md.bars_per_year <= 260
    # and the density of the data itself agrees: bars / years spanned
    years = (md.dates[-1] - md.dates[0]).astype("timedelta64[D]").astype(float) / 365.25
    assert (len(md) - 1) / years == pytest.approx(md.bars_per_year, rel=0.03)
    assert md.volume is not None and np.all(md.close > 0)
    assert np.all(np.diff(md.dates) > np.timedelta64(0, "ns"))


def test_shipped_eurusd_hourly_day_first():
    md = load_shipped("eurusd")
    assert len(md) == 6225
    assert str(md.dates[0]).startswith("2017-01-01T22:00")
    assert str(md.dates[-1]).startswith("2017-12-29T21:00")
    assert md.bars_per_year == pytest.approx(252 * 24)
    # load_csv without the explicit format detects the day-first dates by itself
    auto = load_csv(md.source)
    np.testing.assert_array_equal(auto.dates, md.dates)


def test_shipped_unknown():
    with pytest.raises(MarketDataError, match="unknown shipped"):
        load_shipped("btc")


# ----------------------------------------------------------------------------------------------- walk-forward


@pytest.mark.parametrize("n", [7, 10, 101, 2335, 6225])
@pytest.mark.parametrize("fractions", [(0.7, 0.15, 0.15), (0.5, 0.25, 0.25), (0.34, 0.33, 0.33)])
def test_walk_forward_split_in_order_non_overlapping_covering(n, fractions):
    splits = walk_forward_split(n, fractions)
    assert list(splits) == ["train", "validation", "test"]
    covered = [i for sl in splits.values() for i in range(n)[sl]]
    assert covered == list(range(n))  # every bar exactly once, in chronological order
    assert splits["train"].stop == splits["validation"].start and splits["validation"].stop == splits["test"].start
    for sl in splits.values():
        assert sl.stop > sl.start
    assert abs(splits["train"].stop - round(fractions[0] * n)) <= 1


def test_walk_forward_split_errors():
    with pytest.raises(ValueError, match="validation split would have 0 bars"):
        walk_forward_split(5, (0.9, 0.05, 0.05))
    with pytest.raises(ValueError, match="validation split would have 15 bars .* need at least 20"):
        walk_forward_split(100, (0.7, 0.15, 0.15), min_length=20)
    with pytest.raises(ValueError, match="summing to 1"):
        walk_forward_split(100, (0.7, 0.2, 0.2))
    with pytest.raises(ValueError, match="summing to 1"):
        walk_forward_split(100, (0.7, 0.3))
    with pytest.raises(ValueError, match="n_bars"):
        walk_forward_split(0)
    # a zero fraction is an explicit "no such split": allowed to be empty
    s = walk_forward_split(10, (1.0, 0.0, 0.0))
    assert s["train"] == slice(0, 10) and s["validation"] == slice(10, 10) and s["test"] == slice(10, 10)


# ----------------------------------------------------------------------------------- dates: offsets, ambiguity


def _ohlc_csv(tmp_path, stamps, name="bars.csv"):
    lines = ["Date,Open,High,Low,Close"] + [f"{s},1,1,1,1" for s in stamps]
    return write(tmp_path, "\n".join(lines) + "\n", name=name)


def test_utc_offset_keeps_local_calendar_days(tmp_path):
    # yfinance style: business days at local midnight, +01:00 in winter and +02:00 in summer (offsets change at
    # the daylight-saving switch on 2020-03-29). Converting to UTC made Monday 00:00+01:00 Sunday 23:00: 20% of the
    # bars on a weekend, so bars_per_year was 365.25 instead of 252 and every date one day early.
    import pandas as pd

    days = pd.date_range("2020-01-01", periods=400, freq="B", tz="Europe/Berlin")
    stamps = [d.isoformat(sep=" ") for d in days]
    assert stamps[3] == "2020-01-06 00:00:00+01:00" and "2020-06-01 00:00:00+02:00" in stamps
    md = load_csv(_ohlc_csv(tmp_path, stamps))
    assert md.bars_per_year == 252.0
    assert str(md.dates[3]) == "2020-01-06T00:00:00.000000000"  # Monday 6 January, as written
    assert [str(d)[:10] for d in md.dates] == [s[:10] for s in stamps]


def test_utc_offset_intraday_across_daylight_saving_falls_back_to_utc(tmp_path):
    # Hourly bars over the autumn switch: local 02:00+02:00 then 02:00+01:00 repeat on the wall clock, so these
    # are kept as UTC instants (one hour apart) instead.
    stamps = ["2020-10-25 01:00:00+02:00", "2020-10-25 02:00:00+02:00", "2020-10-25 02:00:00+01:00",
              "2020-10-25 03:00:00+01:00"]
    md = load_csv(_ohlc_csv(tmp_path, stamps))
    assert [str(d)[11:16] for d in md.dates] == ["23:00", "00:00", "01:00", "02:00"]


def test_ambiguous_day_month_dates_refused_naming_file_and_column(tmp_path):
    # Monthly bars written dd/mm/yyyy: read month-first they are 2 .. 12 January of each year, also increasing.
    stamps = [f"01/{m:02d}/{y}" for y in (2010, 2011, 2012) for m in range(1, 13)][1:]
    path = _ohlc_csv(tmp_path, stamps)
    with pytest.raises(MarketDataError) as err:
        load_csv(path)
    msg = str(err.value)
    assert str(path) in msg and "column 'Date'" in msg and "ambiguous" in msg
    assert "env.data.date_format" in msg and "'%d/%m/%Y'" in msg
    assert "'01/02/2010'" in msg and "2010-01-02" in msg and "2010-02-01" in msg
    md = load_csv(path, date_format="%d/%m/%Y")
    assert str(md.dates[0])[:10] == "2010-02-01" and str(md.dates[-1])[:10] == "2012-12-01"
    # 34 monthly gaps, 19 of them 31 days (months Jan/Mar/May/Jul/Aug/Oct/Dec): median 31, 365.25 / 31 = 11.78
    assert md.bars_per_year == pytest.approx(365.25 / 31)


def test_iso_dates_not_ambiguous(tmp_path):
    md = load_csv(_ohlc_csv(tmp_path, ["2020-01-02", "2020-02-03", "2020-03-02"]))
    assert [str(d)[:10] for d in md.dates] == ["2020-01-02", "2020-02-03", "2020-03-02"]


def test_semicolon_separated_file_gets_a_separator_hint(tmp_path):
    path = write(tmp_path, "Date;Open;High;Low;Close;Volume\n2020-01-02;1;1;1;1;5\n2020-01-03;1;1;1;1;5\n")
    with pytest.raises(MarketDataError) as err:
        load_csv(path)
    msg = str(err.value)
    assert str(path) in msg and "columns found in the header: ['Date;Open;High;Low;Close;Volume']" in msg
    assert "seems to use ';' as its separator" in msg


def test_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    from rpbt.config import EnvConfig, TradingConfig, TradingDataConfig
    from rpbt.envs.trading import check_trading_setup

    path = tmp_path / "bom.csv"
    path.write_bytes(("Date,Open,High,Low,Close\n" + "".join(f"2020-01-{d:02d},1,2,1,1.5\n" for d in range(1, 29)))
                     .encode("utf-8-sig"))
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    md = load_csv(path)
    assert str(md.dates[0])[:10] == "2020-01-01" and len(md) == 28
    # The header listed in the "no volume" message was read without the BOM stripped: "\ufeffDate".
    cfg = EnvConfig(id="trading", data=TradingDataConfig(path=str(path)),
                    trading=TradingConfig(features=["log_volume_change"], episode_length=4))
    with pytest.raises(MarketDataError) as err:
        check_trading_setup(cfg)
    msg = str(err.value)
    assert "(columns found: Date, Open, High, Low, Close)" in msg and "\ufeff" not in msg, msg


# ------------------------------------------------------------------------- MetaTrader: Date and Time columns

MT4 = """Date,Time,Open,High,Low,Close,Volume
2016.12.31,23:00,1.0510,1.0520,1.0500,1.0515,800
2017.01.01,22:00,1.0520,1.0530,1.0510,1.0525,1234
2017.01.01,23:00,1.0525,1.0535,1.0515,1.0530,1000
2017.01.02,00:00,1.0530,1.0540,1.0520,1.0535,900
2017.01.02,01:00,1.0535,1.0545,1.0525,1.0540,950
2017.01.02,09:30,1.0540,1.0550,1.0530,1.0545,700
"""
MT4_EXPECTED = np.array(["2016-12-31T23:00", "2017-01-01T22:00", "2017-01-01T23:00", "2017-01-02T00:00",
                         "2017-01-02T01:00", "2017-01-02T09:30"], dtype="datetime64[ns]")


def test_metatrader_date_and_time_columns_are_merged(tmp_path):
    md = load_csv(write(tmp_path, MT4))
    np.testing.assert_array_equal(md.dates, MT4_EXPECTED)  # 22:00 -> 23:00 -> 00:00 of the next day
    assert md.timestamp_columns == ("Date", "Time") and md.timestamps_from == "merged columns Date + Time"
    np.testing.assert_allclose(md.volume, [800, 1234, 1000, 900, 950, 700])
    # seconds and fractions as MetaTrader 5 / tick exports write them; one-digit hours
    text = ("date,time,open,high,low,close\n2017.01.02,9:05:30,1,1,1,1\n2017.01.02,09:05:30.250,1,1,1,1\n"
            "2017.01.02,23:59:59,1,1,1,1\n")
    md = load_csv(write(tmp_path, text, "seconds.csv"))
    np.testing.assert_array_equal(md.dates, np.array(["2017-01-02T09:05:30", "2017-01-02T09:05:30.250",
                                                      "2017-01-02T23:59:59"], dtype="datetime64[ns]"))
    # a one-column timestamp is recorded as such
    assert load_csv(write(tmp_path, GOOD, "daily.csv")).timestamps_from == "column Date"


def test_date_format_of_a_split_file_applies_to_the_date_column(tmp_path):
    path = write(tmp_path, MT4)
    np.testing.assert_array_equal(load_csv(path, date_format="%Y.%m.%d").dates, MT4_EXPECTED)
    # day-first dates: 01.02.2017 and 02.02.2017 read both ways give increasing timestamps: refused, then settled
    text = ("Date,Time,Open,High,Low,Close\n01.02.2017,22:00,1,1,1,1\n01.02.2017,23:00,1,1,1,1\n"
            "02.02.2017,00:00,1,1,1,1\n")
    dayfirst = write(tmp_path, text, "dayfirst.csv")
    with pytest.raises(MarketDataError, match="column 'Date'.*ambiguous.*env.data.date_format"):
        load_csv(dayfirst)
    md = load_csv(dayfirst, date_format="%d.%m.%Y")
    np.testing.assert_array_equal(md.dates, np.array(["2017-02-01T22:00", "2017-02-01T23:00", "2017-02-02T00:00"],
                                                     dtype="datetime64[ns]"))
    # a format with a time in it is not the date column's format: refused, saying what to give instead
    with pytest.raises(MarketDataError) as err:
        load_csv(path, date_format="%Y.%m.%d %H:%M")
    msg = str(err.value)
    assert str(path) in msg and "'%Y.%m.%d %H:%M'" in msg and "column 'Time'" in msg and "column 'Date'" in msg
    assert "date column alone" in msg


MT4_BAD_CASES = {
    # name: (csv text, words in the message)
    "time_column_without_date_column": (
        "Time,Open,High,Low,Close\n22:00,1,1,1,1\n23:00,1,1,1,1\n",
        ["data row 1 (line 2 of the file)", "column 'Time'", "'22:00'", "time of day", "no date"]),
    "date_column_already_holding_a_time": (
        "Date,Time,Open,High,Low,Close\n2017.01.01 22:00,22:00,1,1,1,1\n2017.01.01 23:00,23:00,1,1,1,1\n",
        ["data row 1 (line 2 of the file)", "column 'Date'", "'2017.01.01 22:00'", "time column 'Time'"]),
    "date_column_holding_a_time_without_colon": (
        "Date,Time,Open,High,Low,Close\n2017-01-01T22,22:00,1,1,1,1\n2017-01-01T23,23:00,1,1,1,1\n",
        ["data row 1 (line 2 of the file)", "column 'Date'", "'2017-01-01T22'", "time column 'Time'"]),
    "hour_out_of_range": (
        "Date,Time,Open,High,Low,Close\n2017.01.01,22:00,1,1,1,1\n2017.01.01,24:00,1,1,1,1\n",
        ["data row 2 (line 3 of the file)", "column 'Time'", "'24:00'", "HH:MM"]),
    "time_not_a_time": (
        "Date,Time,Open,High,Low,Close\n2017.01.01,10pm,1,1,1,1\n2017.01.01,23:00,1,1,1,1\n",
        ["data row 1 (line 2 of the file)", "column 'Time'", "'10pm'", "HH:MM"]),
    "time_empty": (
        "Date,Time,Open,High,Low,Close\n2017.01.01,22:00,1,1,1,1\n2017.01.01, ,1,1,1,1\n",
        ["data row 2 (line 3 of the file)", "column 'Time'", "is empty"]),
    "merged_timestamps_out_of_order": (
        "Date,Time,Open,High,Low,Close\n2017.01.01,23:00,1,1,1,1\n2017.01.01,22:00,1,1,1,1\n",
        ["data row 2 (line 3 of the file)", "columns 'Date' + 'Time'", "'2017.01.01 22:00'", "'2017.01.01 23:00'"]),
}


@pytest.mark.parametrize("case", sorted(MT4_BAD_CASES))
def test_bad_date_and_time_columns_name_file_row_and_column(tmp_path, case):
    text, words = MT4_BAD_CASES[case]
    path = write(tmp_path, text)
    with pytest.raises(MarketDataError) as err:
        load_csv(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: "), msg
    for w in words:
        assert w in msg, (w, msg)


def test_metatrader_file_without_a_header_gets_a_hint(tmp_path):
    path = write(tmp_path, "2017.01.01,22:00,1.0520,1.0530,1.0510,1.0525,1234\n"
                           "2017.01.01,23:00,1.0525,1.0535,1.0515,1.0530,1000\n")
    with pytest.raises(MarketDataError) as err:
        load_csv(path)
    msg = str(err.value)
    assert str(path) in msg and "no header row" in msg and "Date,Time,Open,High,Low,Close,Volume" in msg, msg


def test_30000_row_metatrader_file_parses_every_timestamp(tmp_path):
    import pandas as pd

    stamps = pd.date_range("2015-01-01 22:00", periods=30_000, freq="h")
    rows = [f"{s:%Y.%m.%d},{s:%H:%M},1.05,1.06,1.04,1.055,100" for s in stamps]
    path = write(tmp_path, "Date,Time,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n")
    md = load_csv(path)
    np.testing.assert_array_equal(md.dates, stamps.to_numpy().astype("datetime64[ns]"))
