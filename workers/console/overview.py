"""The overview page's figures, from the console's database: alerts per hour by category
over the last day, the share of reviewed alerts analysts confirmed (the precision they
observe) and cleared, the time from alert to first verdict, the open campaigns."""

import json
import statistics
import time

from workers.console.store import Store

HOURS = 24


def overview(store: Store, now_s: float | None = None) -> dict:
    hour_ms = 3600 * 1000
    first = int((now_s or time.time()) * 1000) // hour_ms - (HOURS - 1)  # clock hours
    hourly = store.query(
        "SELECT scored_ms / ? - ? AS hour, COALESCE(category, '-') AS category, "
        "COUNT(*) AS n FROM alerts WHERE scored_ms >= ? GROUP BY hour, category",
        [hour_ms, first, first * hour_ms],
    )
    categories = sorted({r["category"] for r in hourly})
    per_hour = [{c: 0 for c in categories} for _ in range(HOURS)]
    for r in hourly:
        per_hour[min(int(r["hour"]), HOURS - 1)][r["category"]] = r["n"]
    statuses = {
        r["status"]: r["n"]
        for r in store.query("SELECT status, COUNT(*) AS n FROM alerts GROUP BY status")
    }
    reviewed = statuses.get("confirmed", 0) + statuses.get("cleared", 0)
    waits = [
        r["wait_ms"] / 1000
        for r in store.query(
            "SELECT MIN(v.sent_ms) - a.scored_ms AS wait_ms FROM alerts a JOIN verdicts v "
            "USING (message_id) GROUP BY a.message_id"
        )
    ]
    campaigns = store.query(
        "SELECT * FROM campaigns WHERE confirmed_by IS NULL ORDER BY last_seen_ms DESC LIMIT 50"
    )
    for campaign in campaigns:
        campaign["members"] = json.loads(campaign["members"])
    peak = max((sum(h.values()) for h in per_hour), default=0)
    return {
        "categories": categories,
        "per_hour": [
            {"start_ms": (first + i) * hour_ms, "counts": h, "total": sum(h.values())}
            for i, h in enumerate(per_hour)
        ],
        "peak": peak,
        "statuses": statuses,
        "reviewed": reviewed,
        "confirmed_share": statuses.get("confirmed", 0) / reviewed if reviewed else None,
        "wait_median_s": statistics.median(waits) if waits else None,
        "wait_max_s": max(waits) if waits else None,
        "verdicts": len(waits),
        "campaigns": campaigns,
    }
