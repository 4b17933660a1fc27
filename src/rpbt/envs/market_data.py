"""Market data for the trading environment: loading OHLC(V) bars and splitting them walk-forward.

A :class:`MarketData` holds one instrument's bars as aligned 1-D arrays of length ``n`` (the number of bars),
oldest first, with strictly increasing timestamps and positive, finite prices.

* :func:`load_csv` reads the user's own CSV file (header row, one bar per line; a ``Date`` and a ``Time`` column,
  as MetaTrader writes them, are merged into one timestamp).
* :func:`load_shipped` reads one of the series shipped inside the installed ``gym_anytrading`` package
  (``"googl"``: daily GOOGL stock bars 2009-2018; ``"eurusd"``: hourly EUR/USD ask bars through 2017). Nothing is
  downloaded.
* :func:`walk_forward_split` cuts ``n`` bars into chronological, non-overlapping ``train`` / ``validation`` /
  ``test`` slices, so a policy is selected on data after the data it was trained on and tested on data after that.

Needs the ``rpbt[trading]`` extra (pandas parses the files, gym-anytrading ships the two series): without it the
loaders raise :class:`rpbt.extras.MissingExtraError` naming ``pip install 'rpbt[trading]'``.

Errors: :class:`MarketDataError` (a ``ValueError``). Messages from :func:`load_csv` name the file, the column
(as spelled in the file's header) and the row, given both as the 1-based *data row* (the first line after the
header is data row 1) and as the *line* of the file (the header is line 1, so line = data row + 1).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from rpbt.extras import MissingExtraError, require

__all__ = [
    "MarketData",
    "MarketDataError",
    "SHIPPED",
    "SPLIT_NAMES",
    "TRADING_DAYS_PER_YEAR",
    "infer_bars_per_year",
    "load_csv",
    "load_shipped",
    "walk_forward_split",
]

TRADING_DAYS_PER_YEAR = 252.0
CALENDAR_DAYS_PER_YEAR = 365.25
SPLIT_NAMES = ("train", "validation", "test")

# Header names accepted for the timestamp column, in order of preference (matched case-insensitively, stripped).
# A "date" column together with a "time" column is read as one timestamp, date + time of day (MetaTrader files).
DATE_COLUMNS = ("date", "timestamp", "datetime", "time")
PRICE_COLUMNS = ("open", "high", "low", "close")

# name -> (file inside gym_anytrading/datasets/data, explicit timestamp format of that file)
SHIPPED: dict[str, tuple[str, Optional[str]]] = {
    "googl": ("STOCKS_GOOGL.csv", "%Y-%m-%d"),  # Date,Open,High,Low,Close,Adj Close,Volume (daily)
    "eurusd": ("FOREX_EURUSD_1H_ASK.csv", "%d.%m.%Y %H:%M:%S.%f"),  # Time,Open,High,Low,Close,Volume (hourly)
}


class MarketDataError(ValueError):
    """Market data is missing, malformed or too short; the message names the file, row and column."""


# --------------------------------------------------------------------------------------------------- MarketData


def infer_bars_per_year(dates: np.ndarray) -> float:
    """Bars per year of a series of bar timestamps, for annualising per-bar statistics (Sharpe ratio, volatility).

    The rule, from the median spacing ``d`` (in days) between consecutive timestamps:

    * A market is taken to trade ``D`` days a year: ``D = 365.25`` when more than 15% of the bars fall on a
      Saturday or Sunday (a seven-day market such as crypto), otherwise ``D = 252`` trading days.
    * Intraday bars (``d < 0.5``): ``D`` times the median number of bars per calendar date that has bars, so hourly
      FX (24 bars a weekday) gives ``252 * 24 = 6048`` and hourly US stock bars over a 6.5-hour session (7 bars a
      day) give ``252 * 7 = 1764``; the session length comes from the data rather than being assumed.
    * Daily bars (``0.5 <= d < 4``; weekend and holiday gaps do not move the median off one day): ``D / d``, so
      daily stock data gives 252.
    * Coarser bars (``d >= 4``: weekly, monthly): ``365.25 / d`` calendar days (weekly 52.2, monthly about 12).

    ``dates``: shape ``(n,)`` ``datetime64``, strictly increasing, ``n >= 2``. Returns a float > 0.
    Raises :class:`MarketDataError` with fewer than two dates.
    """
    dates = np.asarray(dates).astype("datetime64[ns]")
    if dates.shape[0] < 2:
        raise MarketDataError("need at least two bars to infer bars_per_year")
    spacing_days = np.diff(dates).astype(np.int64) / 86_400e9
    d = float(np.median(spacing_days))
    days = dates.astype("datetime64[D]")
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    weekend_fraction = float(np.mean(weekday >= 5))
    days_per_year = CALENDAR_DAYS_PER_YEAR if weekend_fraction > 0.15 else TRADING_DAYS_PER_YEAR
    if d < 0.5:
        _, counts = np.unique(days, return_counts=True)
        return days_per_year * float(np.median(counts))
    if d < 4.0:
        return days_per_year / d
    return CALENDAR_DAYS_PER_YEAR / d


@dataclass
class MarketData:
    """One instrument's bars, oldest first.

    Attributes (``n`` = number of bars):

    * ``dates``: shape ``(n,)``, ``datetime64[ns]``, strictly increasing, naive (:func:`load_csv` keeps the local
      wall-clock time of timestamps with a UTC offset).
    * ``open``, ``high``, ``low``, ``close``: shape ``(n,)``, ``float64``, finite and > 0, in the quote currency.
    * ``volume``: shape ``(n,)``, ``float64``, finite and >= 0 (units as in the source), or ``None`` when absent.
    * ``name``: a short label (``"googl"``, the CSV file's stem, ...).
    * ``source``: where the bars came from (file path), ``""`` for in-memory data.
    * ``bars_per_year``: bars per year used to annualise; inferred from ``dates`` by :func:`infer_bars_per_year`
      when not given.
    * ``timestamp_columns``: the file's columns the timestamps were read from, as spelled in its header:
      ``("Date",)``, or ``("Date", "Time")`` when a date and a time column were merged; ``()`` for in-memory data.
      :attr:`timestamps_from` says it in words for the run's log.

    Constructing validates shapes, prices and date order and raises :class:`MarketDataError` (without row numbers
    in the file; :func:`load_csv` checks first and reports those).
    """

    dates: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: Optional[np.ndarray] = None
    name: str = ""
    source: str = ""
    bars_per_year: Optional[float] = field(default=None)
    timestamp_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        label = self.source or self.name or "<market data>"
        self.timestamp_columns = tuple(self.timestamp_columns)
        self.dates = np.asarray(self.dates).astype("datetime64[ns]")
        n = self.dates.shape[0]
        if self.dates.ndim != 1:
            raise MarketDataError(f"{label}: dates must be 1-D, got shape {self.dates.shape}")
        for col in PRICE_COLUMNS:
            arr = np.asarray(getattr(self, col), dtype=np.float64)
            if arr.shape != (n,):
                raise MarketDataError(f"{label}: column {col!r} has shape {arr.shape}, expected ({n},) like dates")
            bad = np.flatnonzero(~(np.isfinite(arr) & (arr > 0)))
            if bad.size:
                i = int(bad[0])
                raise MarketDataError(
                    f"{label}: column {col!r} at bar {i} is {arr[i]!r}; prices must be finite and > 0"
                )
            setattr(self, col, arr)
        if self.volume is not None:
            vol = np.asarray(self.volume, dtype=np.float64)
            if vol.shape != (n,):
                raise MarketDataError(f"{label}: column 'volume' has shape {vol.shape}, expected ({n},) like dates")
            bad = np.flatnonzero(~(np.isfinite(vol) & (vol >= 0)))
            if bad.size:
                i = int(bad[0])
                raise MarketDataError(
                    f"{label}: column 'volume' at bar {i} is {vol[i]!r}; volume must be finite and >= 0"
                )
            self.volume = vol
        if n >= 2:
            step = np.diff(self.dates)
            bad = np.flatnonzero(step <= np.timedelta64(0, "ns"))
            if bad.size:
                i = int(bad[0]) + 1
                raise MarketDataError(
                    f"{label}: dates not strictly increasing at bar {i} ({self.dates[i]} after {self.dates[i - 1]})"
                )
        if self.bars_per_year is None:
            self.bars_per_year = infer_bars_per_year(self.dates) if n >= 2 else TRADING_DAYS_PER_YEAR
        self.bars_per_year = float(self.bars_per_year)
        if not (math.isfinite(self.bars_per_year) and self.bars_per_year > 0):
            raise MarketDataError(f"{label}: bars_per_year must be > 0, got {self.bars_per_year}")

    def __len__(self) -> int:
        return int(self.dates.shape[0])

    @property
    def timestamps_from(self) -> str:
        """Where the timestamps came from, in words: ``"merged columns Date + Time"``, ``"column Date"``, or ``""``
        (in-memory data)."""
        if len(self.timestamp_columns) > 1:
            return f"merged columns {' + '.join(self.timestamp_columns)}"
        return f"column {self.timestamp_columns[0]}" if self.timestamp_columns else ""

    @property
    def log_returns(self) -> np.ndarray:
        """Close-to-close log returns, shape ``(n,)``: ``[i] = log(close[i] / close[i-1])``, ``[0] = nan``."""
        out = np.full(len(self), np.nan)
        out[1:] = np.diff(np.log(self.close))
        return out


# --------------------------------------------------------------------------------------------------- CSV loading


def _where(path: str, index: int, column: str, *more: str) -> str:
    """'FILE: data row R (line L), column 'C'' for the 0-based data index ``index`` (``columns 'C' + 'D'`` with
    ``more``)."""
    columns = f"columns {' + '.join(repr(c) for c in (column, *more))}" if more else f"column {column!r}"
    return f"{path}: data row {index + 1} (line {index + 2} of the file), {columns}"


# A timestamp's trailing UTC offset (+01:00, -0500, Z).
_UTC_OFFSET = r"\s*(?:[+-]\d{2}:?\d{2}|Z)$"
# Day and month first, separated by '/', '.' or '-' (01/02/2010, 01.02.2017 22:00): the order is ambiguous.
_DAY_MONTH_FIRST = re.compile(r"^\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}(?!\d)")
# A time of day alone, 24-hour, as MetaTrader's Time column holds it: 22:00, 9:30, 22:00:00, 22:00:00.250.
_TIME_OF_DAY = r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?$"
# strftime directives of a time of day: a date_format holding one is not the format of a date column alone.
_TIME_DIRECTIVES = re.compile(r"%[-#]?[HIMSfpXTRrc]")


def _date_holds_time(path: str, raw, j: int, date_column: str, time_column: str) -> MarketDataError:
    """The error for row ``j`` of a date column that holds a time too, while the file has a time column."""
    return MarketDataError(
        f"{_where(path, int(raw.index[j]), date_column)}: {raw.iloc[j].strip()!r} holds a time of day, but the file "
        f"also has a time column {time_column!r}, which is added to the date; write the date alone in "
        f"{date_column!r} (e.g. 2017.01.01) and the time in {time_column!r}, or drop the {time_column!r} column")


def _parse_times_of_day(raw, path: str, column: str) -> np.ndarray:
    """Parse a time column (``HH:MM``, ``HH:MM:SS`` or ``HH:MM:SS.fff``, 24-hour) into ``timedelta64[ns]`` since
    midnight, shape ``(n,)``, vectorized. Raises :class:`MarketDataError` naming ``path``, ``column`` and the first
    row that is empty or not a time of day (an hour above 23, minutes or seconds above 59 included)."""
    import pandas as pd

    text = raw.fillna("").str.strip()
    parts = text.str.extract(_TIME_OF_DAY)
    hour, minute, second = (pd.to_numeric(parts[k]).to_numpy(dtype=np.float64) for k in range(3))
    second = np.nan_to_num(second, nan=0.0)
    ok = parts[0].notna().to_numpy() & (hour <= 23) & (minute <= 59) & (second <= 59)
    bad = np.flatnonzero(~ok)
    if bad.size:
        j = int(bad[0])
        what = "is empty" if text.iloc[j] == "" else f"{text.iloc[j]!r} is not a time of day"
        raise MarketDataError(f"{_where(path, int(raw.index[j]), column)}: {what} (expected HH:MM or HH:MM:SS, "
                              f"24-hour, e.g. 22:00)")
    nanos = parts[3].fillna("").str.ljust(9, "0").astype(np.int64).to_numpy()
    seconds = (hour.astype(np.int64) * 60 + minute.astype(np.int64)) * 60 + second.astype(np.int64)
    return (seconds * 1_000_000_000 + nanos).astype("timedelta64[ns]")


def _parse_dates(raw, path: str, column: str, date_format: Optional[str], dayfirst: Optional[bool],
                 time_of_day: Optional[np.ndarray] = None, time_column: Optional[str] = None):
    """Parse a column of date strings into ``(local, utc)``: ``datetime64[ns]`` arrays with NaT where a row does
    not parse. ``local`` is the wall-clock time as written (a UTC offset is dropped, not applied); ``utc`` is the
    same instants converted to UTC when any row carries an offset, else None.

    ``time_of_day`` (``timedelta64[ns]``, shape ``(n,)``, from the file's ``time_column``) is added to every
    reading of the dates, before the readings are compared; a date that parses to anything but midnight then
    raises :class:`MarketDataError` (the date column holds a time as well).

    Without ``date_format`` / ``dayfirst``, dates written day-and-month first (``01/02/2010``, ``01.02.2017``) are
    read both month-first and day-first: the reading that parses more rows, then the one that strictly increases,
    wins. Raises :class:`MarketDataError` naming ``path`` and ``column`` when both readings parse every row into a
    strictly increasing series and differ (monthly ``dd/mm/yyyy`` bars read month-first look like daily bars).
    """
    import pandas as pd

    text = raw.str.strip()

    def parse(**kw):
        local, utc = read(**kw)
        if time_of_day is None:
            return local, utc
        timed = np.flatnonzero(~np.isnat(local) & (local != local.astype("datetime64[D]")))
        if timed.size:
            raise _date_holds_time(path, raw, int(timed[0]), column, time_column)
        return local + time_of_day, None if utc is None else utc + time_of_day

    def read(**kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                parsed = pd.to_datetime(text, errors="coerce", **kw)
            except (ValueError, TypeError):  # rows with different UTC offsets (daylight saving): the instants in
                # UTC, and the wall-clock times from the text without its offset (both vectorized)
                utc = pd.to_datetime(text, errors="coerce", utc=True, **kw).dt.tz_localize(None)
                local = pd.to_datetime(text.str.replace(_UTC_OFFSET, "", regex=True), errors="coerce", **kw)
                return local.to_numpy().astype("datetime64[ns]"), utc.to_numpy().astype("datetime64[ns]")
        if getattr(parsed.dt, "tz", None) is None:
            return parsed.to_numpy().astype("datetime64[ns]"), None
        return (parsed.dt.tz_localize(None).to_numpy().astype("datetime64[ns]"),
                parsed.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ns]"))

    def nat(c) -> int:
        return int(np.isnat(c[0]).sum())

    def increasing(c) -> bool:
        values = c[0][~np.isnat(c[0])]
        return bool(np.all(values[1:] > values[:-1])) if len(values) > 1 else True

    if date_format is not None:
        return parse(format=date_format)
    if dayfirst is not None:
        return parse(dayfirst=dayfirst)
    first = next((v for v in text if v), "")
    if not _DAY_MONTH_FIRST.match(first):
        return parse()
    month_first, day_first = parse(dayfirst=False), parse(dayfirst=True)
    both = (month_first, day_first)
    if (all(nat(c) == 0 and increasing(c) for c in both)
            and not np.array_equal(month_first[0], day_first[0])):
        j = int(np.flatnonzero(month_first[0] != day_first[0])[0])
        shown = [str(np.datetime_as_string(c[0][j], unit="D")) for c in both]
        raise MarketDataError(
            f"{path}: column {column!r}: dates such as {text.iloc[j]!r} are ambiguous: read month-first "
            f"({shown[0]}) or day-first ({shown[1]}), every row parses into increasing dates either way; set the "
            f"date format, env.data.date_format (load_csv's date_format), e.g. '%d/%m/%Y' for day/month/year or "
            f"'%m/%d/%Y' for month/day/year (use the file's separator)")
    return min(both, key=lambda c: (nat(c), not increasing(c)))


def load_csv(
    path: Union[str, Path],
    *,
    name: Optional[str] = None,
    min_rows: int = 2,
    date_format: Optional[str] = None,
    dayfirst: Optional[bool] = None,
    bars_per_year: Optional[float] = None,
) -> MarketData:
    """Read OHLC(V) bars from a CSV file with a header row, one bar per line, oldest first.

    Columns are matched by header name, case-insensitively after stripping spaces:

    * timestamp: the first present of ``date``, ``timestamp``, ``datetime``, ``time`` (required). Parsed by pandas;
      without ``date_format`` / ``dayfirst``, dates written day and month first (``01/02/2010``) are read both
      month-first and day-first and the reading that parses every row into increasing timestamps wins; when both
      do and they differ the file is refused as ambiguous (set ``date_format``). A UTC offset in a timestamp is
      dropped, keeping the local wall-clock time as written (``2020-01-06 00:00:00+01:00`` is Monday 6 January,
      00:00), so daily bars stay on their trading days; only when wall-clock times would not strictly increase
      (intraday bars across a daylight-saving change) and the UTC instants do, are the timestamps converted to
      UTC. A value that is a time of day alone (``22:00``) is refused: it has no date.
    * ``date`` and ``time`` both present (MetaTrader: ``Date,Time,Open,High,Low,Close,Volume`` with
      ``2017.01.01,22:00,...``): the timestamp is the date plus the time of day (``HH:MM``, ``HH:MM:SS`` or
      ``HH:MM:SS.fff``, 24-hour); ``date_format`` / ``dayfirst`` then apply to the ``date`` column alone. The
      columns used are recorded in :attr:`MarketData.timestamp_columns`. (A ``timestamp`` or ``datetime`` column
      beside a ``time`` column is read alone, the ``time`` column ignored.)
    * ``open``, ``high``, ``low``, ``close``: required, numbers > 0.
    * ``volume``: optional, numbers >= 0. Other columns (``Adj Close``, ...) are ignored.

    Wholly blank lines are skipped (line numbers in messages still count them).

    Args:
        path: the CSV file.
        name: label for the series; default the file's stem.
        min_rows: fewest data rows accepted (at least 2, so there is one return).
        date_format: explicit ``strftime`` format of the timestamp column, e.g. ``"%d.%m.%Y %H:%M:%S.%f"``; of
            the date column alone (``"%Y.%m.%d"``) when the file has a date and a time column.
        dayfirst: force day-first (True) or month-first (False) parsing of ambiguous dates.
        bars_per_year: override the inferred value (see :func:`infer_bars_per_year`).

    Returns: :class:`MarketData` with ``n`` = number of data rows.

    Raises :class:`MarketDataError` naming the file, the column and the row (1-based data row and file line) for:
    an unreadable or empty file; missing required columns (the message lists the columns found); duplicate
    columns; an empty or unparsable timestamp; a time of day without a date; with date and time columns: an empty
    or bad time, a date that holds a time too, a ``date_format`` with a time in it; day/month-ambiguous dates
    (naming the column; set ``date_format``); timestamps that do not strictly increase; a missing, non-numeric,
    non-finite or non-positive price; a high below the low or a close outside [low, high]; a missing,
    non-numeric or negative volume; fewer than ``min_rows`` rows. A header read as one column holding ``;``, a tab
    or ``|`` adds a hint that the file uses another separator, and a first line that looks like a bar adds a hint
    that the file has no header row (MetaTrader 4 exports often have none); a UTF-8 byte-order mark is ignored.
    Raises :class:`rpbt.extras.MissingExtraError` (``pip install 'rpbt[trading]'``) when pandas is not installed.
    """
    require("pandas", "trading", "reading market data (env.id: trading)")
    path_str = str(path)
    min_rows = max(int(min_rows), 2)
    df = _read_frame(path, path_str)
    by_key, date_col, time_col = _find_columns(df, path_str)
    df = _drop_blank_rows(df, path_str, min_rows)
    dates = _parse_timestamps(df, path_str, date_col, time_col, date_format, dayfirst)
    prices = {k: _numeric_column(df, by_key[k], path_str, allow_zero=False) for k in PRICE_COLUMNS}
    _check_bars(df, by_key, prices, path_str)
    volume = _numeric_column(df, by_key["volume"], path_str, allow_zero=True) if "volume" in by_key else None
    return MarketData(
        dates=dates,
        volume=volume,
        name=name if name is not None else Path(path_str).stem,
        source=path_str,
        bars_per_year=bars_per_year,
        timestamp_columns=(date_col,) if time_col is None else (date_col, time_col),
        **prices,
    )


def _read_frame(path: Union[str, Path], path_str: str):
    """The CSV file as a pandas DataFrame of strings (blank lines kept as rows, so the index counts file lines).

    Raises :class:`MarketDataError` for a missing, empty or unreadable file."""
    import pandas as pd

    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise MarketDataError(f"{path_str}: file not found") from None
    except pd.errors.EmptyDataError:
        raise MarketDataError(f"{path_str}: file is empty (expected a header row and data rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        raise MarketDataError(f"{path_str}: cannot read as CSV: {err}") from None


def _find_columns(df, path_str: str) -> tuple[dict[str, str], str, Optional[str]]:
    """``(by_key, date_col, time_col)`` from the header: ``by_key`` maps each normalised name (stripped, lower
    case) to the name as spelled in the file; ``date_col`` is the timestamp (or date) column; ``time_col`` the time
    column merged with a ``date`` column, else None.

    Raises :class:`MarketDataError` for a duplicate column or missing required columns (with a hint when the file
    seems to use another separator or to have no header row)."""
    found = [str(c) for c in df.columns]
    by_key: dict[str, str] = {}
    for col in found:
        key = col.strip().lower()
        if key in by_key:
            raise MarketDataError(f"{path_str}: duplicate column {key!r} in the header (columns found: {found})")
        by_key[key] = col
    date_col = next((by_key[k] for k in DATE_COLUMNS if k in by_key), None)
    time_col = by_key.get("time") if "date" in by_key else None  # date_col is then the "date" column
    missing = [k for k in PRICE_COLUMNS if k not in by_key]
    if date_col is None:
        missing.insert(0, "date (or timestamp / datetime / time)")
    if missing:
        raise MarketDataError(
            f"{path_str}: missing required column(s) {', '.join(missing)}; columns found in the header: {found}"
            f"{_header_hint(found)}"
        )
    return by_key, date_col, time_col


def _header_hint(found: list[str]) -> str:
    """A hint for a header missing required columns: another separator, or no header row at all; else ``""``."""
    if len(found) == 1:
        sep = next((c for c in (";", "\t", "|") if c in found[0]), None)
        if sep is not None:
            return (f"; the header is one column holding {sep!r}: the file seems to use {sep!r} as its separator, "
                    "but it is read as comma-separated (save it with commas)")
    elif re.match(r"^\d{1,4}[/.\-]\d", found[0].strip()):
        return ("; the first line looks like a bar, not a header: the file has no header row; add one as its first "
                "line naming the columns in their order, e.g. Date,Time,Open,High,Low,Close,Volume for a "
                "MetaTrader 4 export")
    return ""


def _drop_blank_rows(df, path_str: str, min_rows: int):
    """``df`` without its wholly blank rows, keeping the original index so row/line numbers match the file.

    Raises :class:`MarketDataError` when fewer than ``min_rows`` rows remain."""
    blank = (df.apply(lambda s: s.str.strip()) == "").all(axis=1)
    df = df[~blank]
    if len(df) < min_rows:
        raise MarketDataError(f"{path_str}: {len(df)} data rows, need at least {min_rows}")
    return df


def _parse_timestamps(df, path_str: str, date_col: str, time_col: Optional[str], date_format: Optional[str],
                      dayfirst: Optional[bool]) -> np.ndarray:
    """The bars' timestamps, ``datetime64[ns]``, shape ``(n,)``, strictly increasing: local wall-clock times, or
    UTC when only the UTC instants strictly increase (intraday bars across a daylight-saving change).

    Raises :class:`MarketDataError` naming the row and column(s) for a bad time column, a time of day without a
    date, an empty or unparsable timestamp, or timestamps that do not strictly increase."""
    raw_dates = df[date_col]
    time_of_day = _time_of_day(df, path_str, date_col, time_col, date_format)
    local, utc = _parse_dates(raw_dates, path_str, date_col, date_format, dayfirst, time_of_day, time_col)
    nat = np.flatnonzero(np.isnat(local))
    if nat.size:
        j = int(nat[0])
        value = raw_dates.iloc[j]
        what = "is empty" if value.strip() == "" else f"{value!r} is not a date/time"
        hint = f" (format {date_format!r})" if date_format else ""
        raise MarketDataError(f"{_where(path_str, int(df.index[j]), date_col)}: {what}{hint}")
    dates = local
    if utc is not None and np.any(local[1:] <= local[:-1]) and np.all(utc[1:] > utc[:-1]):
        dates = utc  # wall-clock times repeat at a daylight-saving change (intraday bars): keep them in UTC
    _check_increasing(df, dates, path_str, (date_col,) if time_col is None else (date_col, time_col))
    return dates


def _time_of_day(df, path_str: str, date_col: str, time_col: Optional[str],
                 date_format: Optional[str]) -> Optional[np.ndarray]:
    """The time column as ``timedelta64[ns]`` since midnight, shape ``(n,)``; None when there is no time column.

    Raises :class:`MarketDataError` for a ``date_format`` holding a time or a date holding a time (with a time
    column), or a date column value that is a time of day alone (without one)."""
    raw_dates = df[date_col]
    if time_col is None:
        bare = np.flatnonzero(raw_dates.str.strip().str.match(_TIME_OF_DAY, na=False).to_numpy(dtype=bool))
        if bare.size:
            j = int(bare[0])
            raise MarketDataError(
                f"{_where(path_str, int(df.index[j]), date_col)}: {raw_dates.iloc[j].strip()!r} is a time of day with "
                f"no date, and the file has no date column to take the date from; add a Date column before it (as "
                f"MetaTrader writes: Date,Time,Open,High,Low,Close,Volume) or write full timestamps such as "
                f"'2017-01-01 22:00'")
        return None
    if date_format is not None and _TIME_DIRECTIVES.search(date_format):
        raise MarketDataError(
            f"{path_str}: the date format {date_format!r} (env.data.date_format, load_csv's date_format) holds "
            f"a time, but the file has a date column {date_col!r} and a time column {time_col!r}: the format is "
            f"that of the date column alone (e.g. '%Y.%m.%d' for 2017.01.01); the time is read from column "
            f"{time_col!r} as HH:MM or HH:MM:SS")
    timed = np.flatnonzero(raw_dates.str.contains(":", regex=False, na=False).to_numpy(dtype=bool))
    if timed.size:
        raise _date_holds_time(path_str, raw_dates, int(timed[0]), date_col, time_col)
    return _parse_times_of_day(df[time_col], path_str, time_col)


def _check_increasing(df, dates: np.ndarray, path_str: str, columns: tuple[str, ...]) -> None:
    """Raise :class:`MarketDataError` naming the first row (and its timestamp ``columns``) whose timestamp is not
    after the previous row's."""
    bad = np.flatnonzero(dates[1:] <= dates[:-1])
    if not bad.size:
        return
    j = int(bad[0]) + 1

    def stamp(i: int) -> str:
        return " ".join(df[c].iloc[i].strip() for c in columns)

    raise MarketDataError(
        f"{_where(path_str, int(df.index[j]), *columns)}: timestamp {stamp(j)!r} is not after the previous row's "
        f"{stamp(j - 1)!r}; rows must be in strictly increasing time order"
    )


def _numeric_column(df, col: str, path_str: str, allow_zero: bool) -> np.ndarray:
    """Column ``col`` as ``float64``, shape ``(n,)``: finite and > 0 (prices), or >= 0 with ``allow_zero``
    (volume). Raises :class:`MarketDataError` naming the first missing, non-numeric, non-finite or out-of-range
    value's row and column."""
    import pandas as pd

    raw = df[col]
    values = pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(values) & ((values >= 0) if allow_zero else (values > 0))
    bad = np.flatnonzero(~ok)
    if bad.size:
        j = int(bad[0])
        text = raw.iloc[j].strip()
        if text == "":
            what = "is missing"
        elif math.isnan(values[j]):
            what = f"{text!r} is not a number"
        elif not math.isfinite(values[j]):
            what = f"{text!r} is not finite"
        else:
            what = f"{text!r} is {'negative' if allow_zero else 'not positive'}"
        kind = "volume must be >= 0" if allow_zero else "prices must be > 0"
        raise MarketDataError(f"{_where(path_str, int(df.index[j]), col)}: {what} ({kind})")
    return values


def _check_bars(df, by_key: dict[str, str], prices: dict[str, np.ndarray], path_str: str) -> None:
    """Raise :class:`MarketDataError` naming the first row whose high is below its low or whose close lies
    outside [low, high]."""
    high, low, close = prices["high"], prices["low"], prices["close"]
    for col, bad_rows, what in (
        ("high", high < low, "is below the row's low"),
        ("close", (close < low) | (close > high), "is outside the row's [low, high]"),
    ):
        hit = np.flatnonzero(bad_rows)
        if hit.size:
            j = int(hit[0])
            raise MarketDataError(
                f"{_where(path_str, int(df.index[j]), by_key[col])}: {df[by_key[col]].iloc[j].strip()!r} {what} "
                f"(high {df[by_key['high']].iloc[j].strip()}, low {df[by_key['low']].iloc[j].strip()}, close "
                f"{df[by_key['close']].iloc[j].strip()}); a bar needs low <= close <= high"
            )


def _shipped_dir() -> Path:
    """The ``datasets/data`` folder of the installed gym_anytrading, found without importing the package.

    (Importing ``gym_anytrading`` parses both CSVs and imports matplotlib; ``find_spec`` only locates it. Falls
    back to :mod:`importlib.resources`, which imports it.)
    """
    spec = importlib.util.find_spec("gym_anytrading")
    if spec is None:
        raise MissingExtraError(
            "the shipped market data (env.data.source: googl / eurusd) needs the Python package 'gym_anytrading', "
            "which is not installed; install it with: pip install 'rpbt[trading]' (or use env.data.source: csv "
            "with your own file)"
        )
    if spec.submodule_search_locations:
        for base in spec.submodule_search_locations:
            candidate = Path(base) / "datasets" / "data"
            if candidate.is_dir():
                return candidate
    return Path(str(importlib.resources.files("gym_anytrading") / "datasets" / "data"))


def load_shipped(name: str) -> MarketData:
    """Load a series shipped with gym-anytrading: ``"googl"`` (daily GOOGL stock bars, 2335 rows, 2009-05-22 to
    2018-08-29, ~252 bars/year) or ``"eurusd"`` (hourly EUR/USD ask bars, 6225 rows, 2017-01-01 22:00 to
    2017-12-29 21:00, 252 * 24 = 6048 bars/year). No network access.

    Raises :class:`MarketDataError` for an unknown name, :class:`rpbt.extras.MissingExtraError` when gym-anytrading
    (the ``rpbt[trading]`` extra) is not installed.
    """
    key = name.strip().lower()
    if key not in SHIPPED:
        raise MarketDataError(f"unknown shipped market data {name!r}; choose one of {sorted(SHIPPED)}")
    filename, date_format = SHIPPED[key]
    path = _shipped_dir() / filename
    if not path.is_file():
        raise MarketDataError(f"{path}: shipped data file not found in the installed gym-anytrading package")
    return load_csv(path, name=key, date_format=date_format)


# --------------------------------------------------------------------------------------------------- splits


def walk_forward_split(
    n_bars: int,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    min_length: int = 1,
) -> dict[str, slice]:
    """Chronological train / validation / test slices of ``range(n_bars)``.

    Boundaries are ``b1 = round(n * f_train)`` and ``b2 = round(n * (f_train + f_validation))`` (halves rounded
    up), giving
    ``{"train": slice(0, b1), "validation": slice(b1, b2), "test": slice(b2, n)}``: in order, non-overlapping, and
    together covering every bar exactly once.

    Args:
        n_bars: number of bars ``n`` (> 0).
        fractions: three non-negative fractions summing to 1 (within 1e-6).
        min_length: fewest bars a split with a positive fraction must have (default 1; 0 checks nothing, so a
            caller can see the lengths first). A split whose fraction is exactly 0 is allowed to be empty (you
            asked for no such split).

    Raises ``ValueError`` for bad fractions or a split with a positive fraction shorter than ``min_length``.
    """
    n = int(n_bars)
    if n <= 0:
        raise ValueError(f"walk_forward_split: n_bars must be > 0, got {n_bars}")
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        raise ValueError(
            f"walk_forward_split: fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    b1 = min(max(math.floor(n * fr[0] + 0.5), 0), n)
    b2 = min(max(math.floor(n * (fr[0] + fr[1]) + 0.5), b1), n)
    splits = {"train": slice(0, b1), "validation": slice(b1, b2), "test": slice(b2, n)}
    need = int(min_length)
    for (split, sl), f in zip(splits.items(), fr):
        length = sl.stop - sl.start
        if f > 0 and length < need:
            raise ValueError(
                f"walk_forward_split: the {split} split would have {length} bars (fraction {f} of {n}), "
                f"need at least {need}; use more data or a larger fraction"
            )
    return splits
