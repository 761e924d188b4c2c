from PIL import Image

from deskgen.services.generator.evaluate import cli


def test_eval_presets_writes_a_labelled_contact_sheet_and_the_latency_table(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DESKGEN_GENERATOR_DEVICE", "cpu")
    out = tmp_path / "eval"
    assert cli(["--prompts", "seed", "--out", str(out), "--model", str(tiny_dir),
                "--steps", "2", "--size", "64", "--cell", "64"]) == 0
    sheet = Image.open(out / "contact-sheet.png")
    assert sheet.size == (90 + 7 * 64, 20 + 2 * 64)
    table = (out / "presets.md").read_text()
    assert "| preset | adapters | latency s | peak VRAM GB |" in table
    assert "| mix | dalle 0.6, ott 0.4, 3d 0.4 |" in table
    assert "dev-random" in table
    assert sum(line.startswith("| ") for line in table.splitlines()) == 1 + 7
