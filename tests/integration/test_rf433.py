"""433 MHz buttons: the receiver stub on a pty, `lianfang learn`, one event per press."""

from __future__ import annotations

import asyncio
import subprocess

import yaml

from tests.clients import running, wait_until
from tests.field import start_learn, stub
from tests.harness import TestGateway, init_config

SHOP = "S00011"


def rf_config(tmp_path, block_url: str, police_url: str, port: str, *, interval: float = 15):
    path = init_config(tmp_path, block_url=block_url, police_url=police_url)
    text = path.read_text()
    text = text.replace(
        "  name: shops\n",
        "  name: shops\n"
        "- kind: rf433  # the receiver by the door\n"
        "  name: rf-1\n"
        f"  port: {port}\n"
        "  burst_s: 0.5\n",
    )
    text = text.replace("status_interval_s: 15", f"status_interval_s: {interval}")
    if "status_interval_s" not in text:
        text += f"status_interval_s: {interval}\n"
    path.write_text(text)
    return path


def learn(config, device: str) -> subprocess.Popen[str]:
    """Start `lianfang learn` and return once it listens for a press."""
    return start_learn(config, "--shop", SHOP, "--device", device)


def test_learn_writes_the_code_safely_and_each_press_is_one_event(
    tmp_path, block_broker, police_broker, gateway_process
):
    """Learn keeps comments and a backup; then 3 presses of 5-10 frames each make 3 panics; an unknown code is counted and listed."""
    with stub("rf433_receiver") as rf:
        config = rf_config(tmp_path, block_broker.url, police_broker.url, rf.port, interval=0.2)
        before = config.read_text()
        proc = learn(config, "rb-1")
        rf.send("press a1b2c3 7")
        rf.expect("PRESSED")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Heard code A1B2C3" in out
        after = config.read_text()
        assert (tmp_path / "lianfang.yaml.bak").read_text() == before
        for line in before.splitlines():
            if line.startswith("#") or "# the receiver" in line:
                assert line in after
        data = yaml.safe_load(after)
        assert list(data) == list(yaml.safe_load(before))  # key order kept
        [rf_driver] = [d for d in data["drivers"] if d["name"] == "rf-1"]
        assert rf_driver["buttons"] == [{"code": "A1B2C3", "shop_id": SHOP, "device_id": "rb-1"}]
        [shop] = [s for s in data["shops"] if s["id"] == SHOP]
        assert {"id": "rb-1", "kind": "rf433_button"} in shop["devices"]

        gw = TestGateway(config)
        gateway_process.append(gw)
        gw.start()

        async def scenario() -> None:
            async with running(police_url=police_broker.url) as (_, platform):
                assert platform is not None
                for _ in range(3):
                    rf.send("press A1B2C3")
                    await asyncio.to_thread(rf.expect, "PRESSED", 10)
                    await asyncio.sleep(0.8)  # past burst_s: the next press is a new one
                rf.send("noise 3")  # a garbled line may lack its line end: a frame follows
                rf.send("press 00FFEE 6")
                await wait_until(lambda: len(platform.by_id) == 3, 10, "three panics")
                await wait_until(
                    lambda: "rf-1.00FFEE" in gw.status()["unknown_codes"], 10, "the unknown code"
                )
                await asyncio.sleep(0.5)
                assert len(platform.unique) == 3
                assert {(d.body["device_id"], d.body["kind"]) for d in platform.unique} == {
                    ("rb-1", "panic")
                }
                assert {d.body["attrs"]["code"] for d in platform.unique} == {"A1B2C3"}
                await wait_until(
                    lambda: gw.status()["rejected"].get("rf-1.noise", 0) >= 1, 10, "noise counted"
                )
                assert gw.status()["rejected"]["rf-1.unknown_code"] == 1

        asyncio.run(scenario())

        # With the gateway running, learn takes the code from its status instead of the port.
        proc = learn(config, "rb-2")
        rf.send("press D4E5F6")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        [rf_driver] = [
            d for d in yaml.safe_load(config.read_text())["drivers"] if d["name"] == "rf-1"
        ]
        assert rf_driver["buttons"][-1] == {"code": "D4E5F6", "shop_id": SHOP, "device_id": "rb-2"}


def test_learn_refuses_a_code_already_bound_and_changes_nothing(
    tmp_path, block_broker, police_broker
):
    """A code learned for one device cannot be learned for another; the file is left as it was."""
    with stub("rf433_receiver") as rf:
        config = rf_config(tmp_path, block_broker.url, police_broker.url, rf.port)
        proc = learn(config, "rb-1")
        rf.send("press 123ABC 5")
        proc.communicate(timeout=30)
        assert proc.returncode == 0
        learned = config.read_text()
        proc = learn(config, "rb-2")
        rf.send("press 123ABC 5")
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 1
        assert "code 123ABC is already learned as S00011/rb-1" in err
        assert config.read_text() == learned
