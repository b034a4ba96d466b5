"""What mapping a device payload costs, in this process: per message, against parsing it alone.

    python -m bench.devices            # about 10 s
    python -m bench.devices --quick    # about 2 s

The ``mqtt_devices`` driver's ``handle`` (decode, dispatch by topic and code,
every mapping of the device, events built) on three streams: Zigbee2MQTT
contact reports (a state change every tenth message), SOS presses, and RF
bridge codes for a bridge with 200 buttons (a tenth of them codes of no
device). The floor is ``json.loads`` of the same payloads, a cost any MQTT
ingest pays. Results go to ``bench/results/devices-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bench.stats import RESULTS, percentile
from drivers.base import DriverContext
from drivers.mqtt_devices import MqttDevicesDriver
from drivers.mqtt_devices_config import MqttDevicesConfig
from gateway.mqtt.client import BrokerConfig

SHOP = "S00001"
BUTTONS = 200


def _driver() -> MqttDevicesDriver:
    devices = [
        {"shop": SHOP, "device": "door", "preset": "zigbee2mqtt.contact", "topic": "z2m/door"},
        {"shop": SHOP, "device": "sos", "preset": "zigbee2mqtt.sos", "topic": "z2m/sos"},
        *(
            {
                "shop": SHOP,
                "device": f"rf-{i}",
                "preset": "tasmota.rf_bridge",
                "topic": "tele/rfbridge/RESULT",
                "code": f"{i:06X}",
            }
            for i in range(BUTTONS)
        ),
    ]
    config = MqttDevicesConfig.model_validate(
        {"kind": "mqtt_devices", "name": "bench", "burst_s": 0.000001, "devices": devices}
    )
    names = frozenset(d["device"] for d in devices)
    context = DriverContext("GW-B", BrokerConfig(url="mqtt://127.0.0.1:1"), {SHOP: names})
    return MqttDevicesDriver(config, context=context)


def _streams(n: int) -> dict[str, list[tuple[str, bytes]]]:
    def contact(i: int) -> bytes:
        body = {"battery": 90, "contact": (i // 10) % 2 == 0, "linkquality": 100, "voltage": 3000}
        return json.dumps(body).encode()

    def code(i: int) -> bytes:
        data = f"{i % (BUTTONS + BUTTONS // 10):06X}"  # past BUTTONS: no device has it
        return json.dumps(
            {"RfReceived": {"Sync": 11410, "Low": 370, "High": 1070, "Data": data}}
        ).encode()

    sos = json.dumps({"action": "emergency", "battery": 100, "linkquality": 87}).encode()
    return {
        "zigbee2mqtt contact": [("z2m/door", contact(i)) for i in range(n)],
        "zigbee2mqtt sos": [("z2m/sos", sos)] * n,
        "tasmota rf bridge, 200 buttons": [("tele/rfbridge/RESULT", code(i)) for i in range(n)],
    }


def _per_message_us(
    run: Callable[[str, bytes], object], stream: list[tuple[str, bytes]]
) -> list[float]:
    """Microseconds per message, measured over batches of 100."""
    batches = []
    for start in range(0, len(stream), 100):
        batch = stream[start : start + 100]
        began = time.perf_counter()
        for topic, payload in batch:
            run(topic, payload)
        batches.append((time.perf_counter() - began) / len(batch) * 1e6)
    return batches


def main() -> None:
    """Measure and print; write the JSON result."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20,000 messages a stream, not 100,000")
    n = 20_000 if ap.parse_args().quick else 100_000
    rows = {}
    for name, stream in _streams(n).items():
        driver = _driver()
        mapped = _per_message_us(driver.handle, stream)
        floor = _per_message_us(lambda _t, p: json.loads(p), stream)
        rows[name] = {
            "messages": n,
            "mapped_us_p50": round(percentile(mapped, 50), 2),
            "mapped_us_p99": round(percentile(mapped, 99), 2),
            "floor_us_p50": round(percentile(floor, 50), 2),
            "messages_per_s": round(1e6 / percentile(mapped, 50)),
            "rejected": dict(driver.rejected),
        }
        row = rows[name]
        print(
            f"{name:32} {row['mapped_us_p50']:8.2f} us/msg (p99 of batches "
            f"{row['mapped_us_p99']:.2f}), floor json.loads {row['floor_us_p50']:.2f} us, "
            f"{row['messages_per_s']:,} msg/s"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"devices-{stamp}.json"
    out.write_text(json.dumps({"when": stamp, "streams": rows}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
