"""The machine record each cell keeps in summary.json and its MLflow tags."""

import platform

import torch

from groklab.machine import cpu_model, machine_record, machine_tags


def test_cpu_model_is_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                    "model name\t: Intel(R) Xeon(R) Test CPU @ 2.00GHz\nprocessor\t: 1\n")
    assert cpu_model(info) == "Intel(R) Xeon(R) Test CPU @ 2.00GHz"
    assert cpu_model(tmp_path / "missing") == (platform.processor() or platform.machine())


def test_record_says_device_torch_and_threads():
    record = machine_record(torch.device("cpu"))
    assert record["device"] == "cpu" and record["gpu"] is None
    assert record["torch"] == torch.__version__
    assert record["threads"] == torch.get_num_threads()
    assert record["python"] == platform.python_version()
    assert record["cpu"] == cpu_model()
    tags = machine_tags(record)
    assert tags["machine.torch"] == torch.__version__ and "machine.gpu" not in tags
