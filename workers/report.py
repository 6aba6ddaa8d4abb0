"""`fraud report`: how a run went, as one PNG, for someone without Grafana.

It asks a Prometheus server (its HTTP API, `/api/v1/query_range`) for the main panels of
the dashboard over a time range: throughput, alerts by category, latency quantiles and
consumer lag per partition, and draws them with matplotlib.
"""

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fraud.errors import FraudError


class PrometheusQueryError(FraudError):
    """The Prometheus server did not answer, or refused a query."""

    retriable = True


@dataclass(frozen=True)
class Series:
    label: str
    times: np.ndarray  # unix seconds
    values: np.ndarray


def _latency(q: float, rate_window: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (le) "
        f"(rate(fraud_end_to_end_latency_seconds_bucket[{rate_window}])))"
    )


def report_panels(rate_window: str = "1m") -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(title, unit, [(legend template, PromQL)]) of each panel; a legend template names
    the label whose value labels each series ("{category}"), or is the literal legend."""
    w = rate_window
    return [
        (
            "Throughput",
            "messages/s",
            [
                ("consumed", f"sum(rate(fraud_messages_consumed_total[{w}]))"),
                ("scored", f"sum(rate(fraud_messages_scored_total[{w}]))"),
            ],
        ),
        (
            "Alerts by category",
            "alerts/s",
            [("{category}", f"sum by (category) (rate(fraud_alerts_published_total[{w}]))")],
        ),
        (
            "End-to-end latency",
            "seconds",
            [("p50", _latency(0.5, w)), ("p90", _latency(0.9, w)), ("p99", _latency(0.99, w))],
        ),
        (
            "Consumer lag",
            "messages",
            [("partition {partition}", "sum by (partition) (fraud_consumer_lag_messages)")],
        ),
    ]


def query_range(url: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    """The `result` of a range query: [{"metric": {...}, "values": [[t, "v"], ...]}]."""
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    endpoint = f"{url.rstrip('/')}/api/v1/query_range?{params}"
    try:
        with urllib.request.urlopen(endpoint, timeout=30) as reply:  # noqa: S310 (http only)
            body = json.load(reply)
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")[:300]
        raise PrometheusQueryError(f"Prometheus refused {expr!r}: {e.code} {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        raise PrometheusQueryError(
            f"no Prometheus answered at {url} ({e}): start one or pass --prometheus URL"
        ) from None
    if body.get("status") != "success":
        raise PrometheusQueryError(f"Prometheus refused {expr!r}: {body.get('error')}")
    return body["data"]["result"]


def _series(result: list[dict], legend: str) -> list[Series]:
    out = []
    for item in result:
        values = np.array(item["values"], dtype=float).reshape(-1, 2)
        label = legend.format_map(_Missing(item["metric"]))
        out.append(Series(label, values[:, 0], values[:, 1]))
    return out


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def render_report(url: str, start: float, end: float, out: Path, step: float = 5.0) -> Path:
    """Query every panel over [start, end] and write the PNG; returns its path."""
    import matplotlib  # lazily: only `fraud report` draws

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    panels = report_panels()
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.6 * len(panels)), sharex=True)
    for ax, (title, unit, queries) in zip(axes, panels, strict=True):
        drawn = 0
        for legend, expr in queries:
            for s in _series(query_range(url, expr, start, end, step), legend):
                times = s.times.astype("datetime64[s]")
                ax.plot(times, np.nan_to_num(s.values, nan=np.nan), label=s.label, lw=1.4)
                drawn += 1
        ax.set_title(title, loc="left", fontsize=11)
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(loc="upper right", fontsize=8, ncol=min(drawn, 4))
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", color="grey")
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    axes[-1].set_xlabel("time (UTC)")
    fig.suptitle(f"fraud pipeline: {url}", fontsize=12)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
