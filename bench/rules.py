"""What the rules engine costs: per event with 50 rules, and on panic -> notify latency.

    python -m bench.rules                   # about 5 minutes on 2 cores, stock and tuned
    python -m bench.rules --quick           # about 2 minutes
    python -m bench.rules --broker tuned    # one broker only (stock or tuned)

1. **Evaluation cost**, in this process: 50 rules (the 7 defaults and 43 more,
   half of them on the panic path with conditions that do not hold), over a mix
   of event kinds from every shop. Per event: ``engine.evaluate`` alone, and
   evaluate + ``actions.apply`` (routes, attrs, neighbour alert built). The floor
   is parsing the same event from its JSON (``Event.model_validate_json``), a
   cost every event pays anyway.
2. **Panic -> 10th neighbour notice**, presses every 100 ms under 50 events/s
   of background load (``bench.latency``'s latency phase, same brokers, same
   panels) in one run: the bare relay (floor), then the gateway as it was before
   the rules engine (the commit before ``rules/engine.py`` was added, exported
   with ``git archive``) and the gateway now with the same 50 rules, in ABBA
   order with half the presses each time; a gateway's figure is the mean of its
   two runs. The verdict: the p99 with the engine is at most 20 % above before.
   On each broker (``bench.brokers``); on the stock one the gateway before the
   engine is not run (``BEFORE_SKIPPED``), so there it is the floor and now.

Results go to ``bench/results/rules-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import yaml

from bench.brokers import add_broker_option, broker_pair, broker_settings, chosen
from bench.latency import (
    QUICK,
    Block,
    Settings,
    Started,
    latency_run,
    log,
    make_bench,
    stop,
    write_config,
)
from bench.procs import RelayProcess, machine_info
from bench.stats import RESULTS, finite
from lab.process import NotifyingProcess

REPO = Path(__file__).resolve().parent.parent
KINDS = ("panic", "door_open", "door_close", "test", "low_battery", "tamper", "heartbeat")
MAX_P99_RATIO = 1.2
BEFORE_SKIPPED = (
    "the gateway before the rules engine is not run on the stock broker: it predates the "
    "fix for a broker's Receive Maximum (it changed paho's in-flight window on a live "
    "connection), so on a stock Mosquitto its links reconnect in a loop"
)


def fifty_rules() -> list[dict[str, Any]]:
    """43 rules beside the 7 defaults: realistic shapes that mostly do not fire."""
    rules: list[dict[str, Any]] = []
    for i in range(43):
        kind = KINDS[i % len(KINDS)]
        rule: dict[str, Any] = {"name": f"bench-{i:02d}", "when": {"kinds": [kind]}}
        if i % 3 == 0:
            rule["if"] = f"hour == 25 or attrs.get('bench') == {i}"
        elif i % 3 == 1:
            rule["when"]["cells"] = [f"L9-M{i:02d}"]
        else:
            rule["when"]["between"] = [{"from": "03:00", "to": "03:01"}]
            rule["when"]["levels"] = ["extraordinary"]
        rule["do"] = [{"action": "forward", "priority": "trouble"}]
        rules.append(rule)
    return rules


def open_now_zone() -> str:
    """A fixed-offset zone in which it is now early afternoon: every shop is open.

    So doors are doors, not intrusions, and both gateways get the same event mix.
    """
    offset = (13 - datetime.now(UTC).hour) % 24
    offset = offset - 24 if offset > 12 else offset
    # POSIX sign: Etc/GMT-8 is UTC+8.
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


def with_rules(config: Path, *, extra: bool = True) -> None:
    """Put the 43 extra rules (unless not ``extra``) into ``config``, with the shops open."""
    data = yaml.safe_load(config.read_text())
    data["rules"] = {"rules": fifty_rules() if extra else [], "timezone": open_now_zone()}
    config.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def evaluation_cost(config: Path, events: int) -> dict[str, Any]:
    """Nanoseconds per event: parse (floor), evaluate, evaluate + apply."""
    from gateway.actions import RuleActions  # noqa: PLC0415 - after the config exists
    from gateway.config.file import load_config  # noqa: PLC0415
    from gateway.events import Event, EventKind, Source  # noqa: PLC0415
    from gateway.mqtt.notify import BlockPublisher  # noqa: PLC0415
    from gateway.rule_engine import rule_engine  # noqa: PLC0415
    from rules.engine import effective_rules  # noqa: PLC0415

    logging.disable(logging.WARNING)  # notices capped, sirens not running: expected here
    cfg = load_config(config)
    in_force = [e.rule for e in effective_rules(cfg.rules)]
    engine = rule_engine(cfg)
    publisher = BlockPublisher(cfg.broker, gateway_id="bench", status=dict, status_interval_s=60)
    actions = RuleActions(
        cfg,
        in_force,
        schedule=engine.schedule,
        publisher=publisher,
        routes=dict.fromkeys(EventKind, ("police",)),
    )
    shops = [s.id for s in cfg.shops]
    now = datetime.now(UTC)
    bodies = [
        Event(
            id=f"E{i:08d}",
            gateway_id="GW-001",
            shop_id=shops[i % len(shops)],
            device_id="panel-1",
            kind=EventKind(KINDS[i % len(KINDS)]),
            occurred_at=now + timedelta(minutes=i),  # across the day: armed and not
            received_at=now,
            source=Source(driver="bench", ref="bench"),
            attrs={"seq": i},
        ).model_dump_json()
        for i in range(events)
    ]

    def timed(work: Any) -> float:  # noqa: ANN401 - a callable over one body
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter_ns()
            for body in bodies:
                work(body)
            best = min(best, (time.perf_counter_ns() - t0) / len(bodies))
            publisher._pending.clear()  # noqa: SLF001 - nothing publishes in this phase
        return best

    parsed = [Event.model_validate_json(b) for b in bodies]
    by_body = dict(zip(bodies, parsed, strict=True))
    parse_ns = timed(Event.model_validate_json)
    evaluate_ns = timed(lambda b: engine.evaluate(by_body[b]))
    apply_ns = timed(lambda b: actions.apply(by_body[b], engine.evaluate(by_body[b])))
    logging.disable(logging.NOTSET)
    return {
        "rules": len(in_force),
        "events": len(bodies),
        "parse_ns_floor": round(parse_ns),
        "evaluate_ns": round(evaluate_ns),
        "evaluate_apply_ns": round(apply_ns),
        "evaluate_vs_parse": round(evaluate_ns / parse_ns, 2),
        "evaluate_apply_vs_parse": round(apply_ns / parse_ns, 2),
    }


def export_before(workdir: Path) -> tuple[Path, str]:
    """The tree as it was before the rules engine, from git; its folder and commit."""
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "rules/engine.py"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    base = f"{added[-1]}~1"
    commit = subprocess.run(
        ["git", "rev-parse", base], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=REPO, capture_output=True, check=True
    ).stdout
    folder = workdir / "before"
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder, commit


class TreeGateway(NotifyingProcess):
    """``lianfang run`` from another source tree (its ``gateway`` package first on the path)."""

    def __init__(self, tree: Path, config: Path, *, log: Path) -> None:
        """Run the gateway of ``tree`` on ``config``."""
        # ``python -m gateway`` of that tree: its command line module may have another name.
        boot = (
            f"import runpy, sys; sys.path.insert(0, {str(tree)!r}); "
            "runpy.run_module('gateway', run_name='__main__', alter_sys=True)"
        )
        super().__init__([sys.executable, "-c", boot, "run", "--config", str(config)], log=log)


def run_order(broker: str, s: Settings) -> list[tuple[str, Settings]]:
    """Which consumers run on ``broker``, in order, and with how many presses each.

    Floor once; then before and now in ABBA order, half the presses each time, so
    that drift on this shared machine (other loads, broker state) falls on both.
    Without the gateway before (stock): now twice, half the presses each time.
    """
    half = replace(s, presses=max(s.presses // 2, 20))
    if broker == "stock":
        return [("floor", s), ("now", half), ("now", half)]
    return [("floor", s), ("before", half), ("now", half), ("now", half), ("before", half)]


async def latencies(
    s: Settings, workdir: Path, started: Started, broker: str, before_tree: Path
) -> dict[str, list[dict[str, Any]]]:
    """Panic -> notify on ``broker`` for each consumer of ``run_order``: its runs' figures."""
    order = run_order(broker, s)
    running = {name for name, _ in order}
    trees = {
        name: tree for name, tree in (("before", before_tree), ("now", REPO)) if name in running
    }
    with broker_pair(broker, workdir) as (block_broker, police_broker):
        block_url, police_url = block_broker.url, police_broker.url
        configs = {
            name: write_config(workdir / name / "site", block_url, police_url)[0] for name in trees
        }
        with_rules(configs["now"])
        b = make_bench(
            s, workdir, started, broker=broker, block_url=block_url, police_url=police_url,
            config=configs["now"],
        )  # fmt: skip
        b.block = Block(block_url, b.shop_ids)
        await b.block.connect()
        consumers = {
            "floor": RelayProcess(
                block_url=block_url, police_url=police_url, neighbours=b.table_file,
                log=workdir / "relay.log", client_id="bench-relay",
            ),
            **{
                name: TreeGateway(tree, configs[name], log=workdir / f"{name}.log")
                for name, tree in trees.items()
            },
        }  # fmt: skip
        runs: dict[str, list[dict[str, Any]]] = {}
        try:
            for name, settings in order:
                consumer = started.add(consumers[name])
                await asyncio.to_thread(consumer.start)
                b.say(f"{name}: ready (pid {consumer.pid}); {settings.presses} presses under load")
                b.s = settings
                run_figures = await latency_run(b, name, consumer)
                runs.setdefault(name, []).append(run_figures)
                b.say(f"{name}: notify p99 {run_figures['notify_10th_ms']['p99']} ms")
                stop(consumer)
        finally:
            await b.block.close()
    return runs


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One broker's figures: each consumer's mean over its runs, the ratios, the verdict."""

    def mean_of(name: str, figure: str) -> float:
        values = [r["notify_10th_ms"][figure] for r in runs[name]]
        return round(sum(values) / len(values), 3)

    p99 = {name: mean_of(name, "p99") for name in runs}
    out: dict[str, Any] = {
        "notify_p99_ms": p99,
        "notify_p50_ms": {name: mean_of(name, "p50") for name in runs},
        "now_vs_floor_p99": round(p99["now"] / p99["floor"], 2),
        "lost": sum(
            r["notify_incomplete"] + r["police_missing"] for rs in runs.values() for r in rs
        ),
    }
    if "before" in p99:
        out["now_vs_before_p99"] = round(p99["now"] / p99["before"], 2)
        out["before_vs_floor_p99"] = round(p99["before"] / p99["floor"], 2)
        out["verdict"] = "PASS" if p99["now"] <= MAX_P99_RATIO * p99["before"] else "MISS"
    else:
        out["before_skipped"] = BEFORE_SKIPPED
    return out


def report(broker: str, figures: dict[str, Any]) -> str:
    """One broker's panic -> notice line."""
    p99 = figures["notify_p99_ms"]
    line = f"{broker} broker, panic -> 10th notice p99: floor {p99['floor']} ms"
    if "before" in p99:
        line += (
            f", before {p99['before']} ms, now {p99['now']} ms;"
            f" now/before {figures['now_vs_before_p99']}"
            f" (target <= {MAX_P99_RATIO}): {figures['verdict']}"
        )
    else:
        line += f", now {p99['now']} ms; now/floor {figures['now_vs_floor_p99']}; before not run"
    return line + f"; presses short of notices or police deliveries: {figures['lost']}"


def run(s: Settings, events: int, brokers: tuple[str, ...]) -> dict[str, Any]:
    """One whole run on ``brokers``; returns what it wrote."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = Path(tempfile.mkdtemp(prefix="lianfang-bench-rules-"))
    started = Started()
    result: dict[str, Any] = {
        "started_utc": stamp,
        "machine": machine_info(),
        "settings": asdict(s),
        "brokers_measured": list(brokers),
    }
    try:
        config, _ = write_config(workdir / "micro", "mqtt://127.0.0.1:1", "mqtt://127.0.0.1:2")
        with_rules(config, extra=False)
        result["evaluation_defaults"] = evaluation_cost(config, events)
        log(f"evaluation, defaults only: {result['evaluation_defaults']}")
        with_rules(config)
        result["evaluation"] = evaluation_cost(config, events)
        log(f"evaluation, 50 rules: {result['evaluation']}")
        before_tree, result["before_commit"] = export_before(workdir)
        result["brokers"] = {}
        for broker in brokers:
            runs = asyncio.run(latencies(s, workdir / broker, started, broker, before_tree))
            result["brokers"][broker] = {
                "settings_added": broker_settings(broker),
                **summarise(runs),
                "latency": runs,
            }
    finally:
        started.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"rules-{stamp}.json"
    out.write_text(json.dumps(finite(result), indent=2, default=str) + "\n")
    ev, ev7 = result["evaluation"], result["evaluation_defaults"]
    print(
        f"\nrules engine, {ev7['rules']} default rules: evaluate {ev7['evaluate_ns'] / 1000:.1f}"
        f" µs/event ({ev7['evaluate_vs_parse']}x parsing), evaluate+apply"
        f" {ev7['evaluate_apply_ns'] / 1000:.1f} µs ({ev7['evaluate_apply_vs_parse']}x)"
    )
    print(
        f"rules engine, {ev['rules']} rules: evaluate {ev['evaluate_ns'] / 1000:.1f} µs/event"
        f" ({ev['evaluate_vs_parse']}x parsing the event), evaluate+apply"
        f" {ev['evaluate_apply_ns'] / 1000:.1f} µs ({ev['evaluate_apply_vs_parse']}x)"
    )
    for broker, figures in result["brokers"].items():
        print(report(broker, figures))
    if "stock" in brokers:
        print(f"note: {BEFORE_SKIPPED}")
    print(f"written: {out.relative_to(REPO)}")
    return result


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 presses per consumer, not 400")
    add_broker_option(ap)
    args = ap.parse_args()
    run(QUICK if args.quick else Settings(), 5_000 if args.quick else 20_000, chosen(args.broker))


if __name__ == "__main__":
    main()
