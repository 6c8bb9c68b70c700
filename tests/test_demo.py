import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from conftest import needs_fashion_mnist
from mdgan.cli import app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@needs_fashion_mnist
def test_demo_routes_to_every_discriminator(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app, ["demo", "--out", str(out), "--steps", "300", "--device", "cpu", "--set", "data.max_images=5000"]
    )
    assert result.exit_code == 0, result.output
    assert "embedder:" in result.output

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["num_discriminators"] for r in records][0] == 1
    after_last_split = [r for r in records if r["step"] > 200]
    assert after_last_split
    real = [sum(r["real_per_d"][k] for r in after_last_split) for k in range(4)]
    fake = [sum(r["fake_per_d"][k] for r in after_last_split) for k in range(4)]
    assert all(r["num_discriminators"] == 4 for r in after_last_split)
    assert min(real) > 0, real
    assert min(fake) > 0, fake

    for level in range(3):
        assert (out / "partition" / f"level_{level}.png").is_file()
        assert list((out / "samples").glob(f"*_level{level}*.png"))
    assert list((out / "checkpoints").glob("*.safetensors"))


@needs_fashion_mnist
def test_custom_gan_example_runs(tmp_path):
    out = tmp_path / "custom"
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_gan.py"), "--out", str(out), "--steps", "30", "--images", "1500"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert "with 4 discriminators" in completed.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["num_discriminators"] == 4
    assert (out / "checkpoints" / "step_0000030.safetensors").is_file()
