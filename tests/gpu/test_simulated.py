"""SimulatedBackend: built-in scenarios, time-varying readings, processes and scripted faults."""

from __future__ import annotations

import json

import pytest

from gpudoc.gpu import (
    NA,
    DriverLibraryMismatch,
    ManualClock,
    ProcessType,
    Scenario,
    ScenarioError,
    SimulatedBackend,
    builtin_scenarios,
    load_scenario,
)
from gpudoc.gpu.simulated import parse_signal

MIB = 1024 * 1024


def _scenario(**extra) -> dict:
    base = {
        "name": "t",
        "gpus": [
            {"name": "NVIDIA L4", "memory_total_mib": 23034, "reserved_mib": 100, "power_limit_w": 72,
             "utilization": [[0, 0], [10, 100]], "fan": None, "temperature": 50},
            {"name": "NVIDIA L4", "memory_total_mib": 23034, "reserved_mib": 100, "utilization": 40},
        ],
        "processes": [
            {"pid": 10, "gpu": 0, "memory_mib": 1000, "user": "u", "command": "python a.py"},
            {"pid": 11, "gpu": 1, "memory_mib": [[0, 0], [4, 2000]], "start_s": 2, "end_s": 6},
            {"pid": 12, "gpu": 0, "memory_mib": 50, "type": "graphics"},
        ],
    }
    base.update(extra)
    return base


def test_builtin_scenarios_load_and_poll() -> None:
    assert set(builtin_scenarios()) >= {"workstation", "dgx", "faults"}
    for name in builtin_scenarios():
        clock = ManualClock(5)
        snap = SimulatedBackend(name, clock=clock).snapshot()
        assert snap.backend == "simulated"
        scenario = load_scenario(name)
        if not any(f.kind == "init_failure" and f.active(5) for f in scenario.faults):
            assert len(snap.devices) == len(scenario.gpus) > 0
    assert len(load_scenario("dgx").gpus) == 8


def test_readings_follow_signals_and_derivations() -> None:
    clock = ManualClock(5)
    backend = SimulatedBackend(_scenario(), clock=clock)
    gpu = backend.device(0)
    assert gpu.utilization_gpu == 50
    assert gpu.temperature == 50
    assert gpu.fan_speed is NA
    assert gpu.power_limit == 72.0 and 0 < gpu.power_draw < 72
    assert gpu.memory_used == (100 + 1000 + 50) * MIB
    assert gpu.memory_total == 23034 * MIB
    clock.advance(5)
    assert backend.device(0).utilization_gpu == 100
    assert backend.device(0).power_draw > gpu.power_draw


def test_processes_appear_and_vanish() -> None:
    clock = ManualClock(0)
    backend = SimulatedBackend(_scenario(), clock=clock)
    assert backend.device(1).processes == ()
    clock.advance(3)
    (proc,) = backend.device(1).processes
    assert (proc.pid, proc.gpu_index, proc.type, proc.used_memory) == (11, 1, ProcessType.COMPUTE, 1500 * MIB)
    assert backend.device(1).memory_used == (100 + 1500) * MIB
    clock.advance(3)
    assert backend.device(1).processes == ()
    types = {p.pid: p.type for p in backend.device(0).processes}
    assert types == {10: ProcessType.COMPUTE, 12: ProcessType.GRAPHICS}


def test_init_failure_then_recovery() -> None:
    clock = ManualClock(0)
    scenario = _scenario(faults=[{"kind": "init_failure", "error": "driver_library_mismatch", "until_s": 3}])
    backend = SimulatedBackend(scenario, clock=clock)
    with pytest.raises(DriverLibraryMismatch):
        backend.driver()
    assert "version mismatch" in (backend.snapshot().error or "")
    clock.advance(3)
    snap = backend.snapshot()
    assert snap.error is None and len(snap.devices) == 2


def test_gpu_lost_mid_run_and_back() -> None:
    clock = ManualClock(0)
    lost = [{"kind": "gpu_lost", "gpu": 1, "from_s": 1, "until_s": 2}]
    backend = SimulatedBackend(_scenario(faults=lost), clock=clock)
    assert backend.snapshot().devices[1].error is None
    clock.advance(1)
    snap = backend.snapshot()
    assert snap.devices[0].error is None
    assert "GPU 1 is lost" in (snap.devices[1].error or "")
    clock.advance(1)
    assert backend.snapshot().devices[1].error is None


def test_garbage_pids_dropped_vanished_pids_kept() -> None:
    faults = [
        {"kind": "garbage_pids", "gpu": 0, "pids": [0, 4294967295]},
        {"kind": "vanished_pids", "gpu": 0, "pids": [99991], "memory_mib": 1135},
    ]
    backend = SimulatedBackend(_scenario(faults=faults), clock=ManualClock(0))
    gpu = backend.device(0)
    assert sorted(p.pid for p in gpu.processes) == [10, 12, 99991]
    assert gpu.memory_used == (100 + 1000 + 50 + 1135) * MIB


def test_a_process_list_nvml_will_not_give_is_unavailable_not_empty() -> None:
    faults = [{"kind": "process_list_unavailable", "gpu": 0, "from_s": 1, "until_s": 2},
              {"kind": "process_list_unavailable", "gpu": 1, "error": "no_permission"}]
    clock = ManualClock(0)
    backend = SimulatedBackend(_scenario(faults=faults), clock=clock)
    assert backend.device(0).processes_error is None and len(backend.device(0).processes) == 2
    assert backend.device(1).processes_error == "process list unavailable (Insufficient Permissions)"
    clock.advance(1)
    gpu = backend.device(0)
    assert gpu.processes == () and gpu.processes_error == "process list unavailable (Not Supported)"
    assert gpu.error is None and gpu.memory_used == (100 + 1000 + 50) * MIB, "the readings are kept"
    clock.advance(1)
    assert backend.device(0).processes_error is None


def test_the_faults_scenario_ends_with_a_process_list_that_cannot_be_read() -> None:
    devices = SimulatedBackend("faults", clock=ManualClock(35)).snapshot().devices
    assert devices[0].processes_error is None and "Insufficient Permissions" in (devices[1].processes_error or "")


def test_hang_fault_is_bounded() -> None:
    backend = SimulatedBackend(
        _scenario(faults=[{"kind": "hang", "gpu": 0, "seconds": 2}]), clock=ManualClock(0), timeout=0.1
    )
    snap = backend.snapshot()
    assert "no answer" in (snap.devices[0].error or "")
    assert snap.devices[1].error is None


def test_signals() -> None:
    ramp = parse_signal([[0, 0], [10, 100], [20, 100]], "s")
    assert (ramp.at(-1), ramp.at(5), ramp.at(15), ramp.at(99)) == (0, 50, 100, 100)
    wave = parse_signal({"base": 50, "amplitude": 10, "period_s": 4}, "s")
    assert wave.at(0) == pytest.approx(50) and wave.at(1) == pytest.approx(60)
    assert parse_signal(7, "s").at(123) == 7


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"gpus": [{"name": "x"}]}, "gpus[0]: 'name' and 'memory_total_mib' are required"),
        ({"gpus": [{"name": "x", "memory_total_mib": "lots"}]}, "gpus[0].memory_total_mib: expected a number"),
        ({"processes": [{"pid": 1, "gpu": 5}]}, "processes[0].gpu: expected a GPU index in 0..1"),
        ({"faults": [{"kind": "meltdown"}]}, "faults[0].kind: expected one of"),
        ({"faults": [{"kind": "init_failure", "error": "oops"}]}, "faults[0].error: expected one of"),
        ({"faults": [{"kind": "process_list_unavailable", "gpu": 0, "error": "oops"}]},
         "faults[0].error: expected one of not_supported, no_permission"),
        ({"colour": "red"}, "unknown keys ['colour']"),
        ({"faults": [{"kind": []}]}, "faults[0].kind: expected one of garbage_pids, gpu_lost, hang, init_failure, "
         "process_list_unavailable, vanished_pids, got []"),
        ({"faults": [{"kind": "init_failure", "error": ["x"]}]}, "faults[0].error: expected one of"),
        ({"faults": False}, "faults: expected a list, got False"),
        ({"processes": [{"pid": 1, "type": ["compute"]}]}, "processes[0].type: expected one of compute, graphics"),
        ({"processes": [{"pid": 1, "user": 5}]}, "processes[0].user: expected text, got 5"),
        ({"gpus": [], "processes": [{"pid": 1}]}, "processes[0].gpu: the scenario has no GPU"),
        ({"gpus": [{"name": "x", "memory_total_mib": float("inf")}]}, "memory_total_mib: expected a finite number"),
        ({"gpus": [{"name": "x", "memory_total_mib": 0}]}, "gpus[0].memory_total_mib: must be at least 1"),
        ({"gpus": [{"name": "x", "memory_total_mib": 8, "fan": float("nan")}]}, "gpus[0].fan: expected a finite"),
        ({"faults": [{"kind": "hang", "gpu": 0, "seconds": 1e300}]}, "faults[0].seconds: expected 0 to 86400"),
        ({"faults": [{"kind": "hang", "gpu": 0, "seconds": -1}]}, "faults[0].seconds: expected 0 to 86400"),
        ({"loop_s": 0}, "loop_s: must be positive"),
        ({"cuda_version": "twelve"}, "cuda_version: expected MAJOR.MINOR such as 12.4"),
        ({"gpus": [{"name": "x", "memory_total_mib": 1, "utilization": [[5, 1], [1, 2]]}]}, "must not decrease"),
    ],
)
def test_bad_scenarios_name_the_field(patch: dict, message: str) -> None:
    data = _scenario()
    data.update(patch)
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(data, "my.json")
    assert message in str(info.value) and str(info.value).startswith("my.json")
    assert info.value.exit_code == 2


def test_empty_lists_may_be_left_null() -> None:
    scenario = Scenario.from_dict({"gpus": [{"name": "x", "memory_total_mib": 8}], "processes": None, "faults": None})
    assert scenario.processes == () and scenario.faults == ()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("s.yaml", "{\n", "s.yaml: not valid YAML: expected the node content, but found '<stream end>' at line 2, "
         "column 1"),
        ("s.yaml", "gpus: !!binary abc\n", "not valid YAML: failed to decode base64 data: Incorrect padding at line 1"),
        ("s.json", "{\"gpus\": [}", "s.json: not valid JSON: Expecting value: line 1 column 11 (char 10)"),
        ("s.json", "[" * 5000 + "]" * 5000, "s.json: nested too deeply to be a scenario"),
        ("s.yaml", "[" * 3000 + "]" * 3000, "s.yaml: nested too deeply to be a scenario"),
    ],
    ids=["yaml-unclosed", "yaml-bad-base64", "json-bad", "json-deep", "yaml-deep"],
)
def test_unparsable_scenario_files_are_one_line(tmp_path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_scenario_files_json_and_yaml(tmp_path) -> None:
    as_json = tmp_path / "s.json"
    as_json.write_text(json.dumps(_scenario()))
    as_yaml = tmp_path / "s.yaml"
    as_yaml.write_text("name: y\ngpus:\n  - name: NVIDIA T4\n    memory_total_mib: 15360\n")
    assert load_scenario(as_json).gpus[0].name == "NVIDIA L4"
    assert SimulatedBackend(as_yaml, clock=ManualClock()).device(0).name == "NVIDIA T4"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ScenarioError, match="broken.json: not valid JSON"):
        load_scenario(broken)
    with pytest.raises(ScenarioError, match="built-in: dgx, faults, workstation"):
        load_scenario("no-such-scenario")


def test_wall_clock_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("gpudoc.gpu.simulated.time.monotonic", lambda: now[0])
    backend = SimulatedBackend(_scenario(loop_s=10))
    now[0] += 3
    assert [p.pid for p in backend.device(1).processes] == [11]
    now[0] += 10
    assert [p.pid for p in backend.device(1).processes] == [11]
    now[0] += 4
    assert backend.device(1).processes == ()
