"""The llm runtime's vLLM engine on a GPU: the dyno's own command (``kiln_runtime.llm.vllm_server``,
which execs vLLM's OpenAI server) with a tiny random Llama on the GPU, a LoRA adapter when peft
is there, a completion, a chat and tokens/s at 1 and 8 streams. Says plainly, and passes, where
the machine has no vLLM: then the vLLM path was not checked here.

    python3 tests/gpu_checks/check_vllm.py
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    if importlib.util.find_spec("vllm") is None:
        print("vLLM is not installed on this machine: the vLLM path was NOT checked here")
        return 0
    import httpx

    from kiln.bench.streams import http_run
    from kiln.bench.tiny_model import build, build_adapter

    work = Path(tempfile.mkdtemp(prefix="kiln-vllm-check-"))
    base = build(work / "base", hidden=256, layers=2, heads=4)
    adapters = {}
    if importlib.util.find_spec("peft") is not None:
        adapters = {"sql": str(build_adapter(base, work / "sql"))}
    else:
        print("peft is not installed: no LoRA adapter in this check")
    port = free_port()
    env = {**os.environ, "KILN_MODEL": str(base), "KILN_GPUS": "1", "PORT": str(port),
           "HOST": "127.0.0.1", "KILN_LLM_MAX_MODEL_LEN": "512",
           "KILN_LLM_ADAPTERS": json.dumps(adapters),
           "KILN_LLM_ENGINE_ARGS": json.dumps({"gpu_memory_utilization": 0.3})}  # fmt: skip
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "kiln_runtime.llm.vllm_server"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if server.poll() is not None:
                print(f"FAIL: vLLM's server exited with {server.returncode} before it was ready")
                return 1
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() - started > 400:
                print("FAIL: vLLM's server was not ready after 400 s")
                return 1
            time.sleep(1)
        print(f"ready after {time.perf_counter() - started:.1f} s (Kiln's /healthz -> /health)")
        models = [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
        print("models:", models)
        done = httpx.post(f"{url}/v1/completions", timeout=60,
                          json={"prompt": "hello", "max_tokens": 8}).json()  # fmt: skip
        print("completion:", done["choices"][0]["text"], done["usage"])
        chat = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": models[0], "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        print("chat:", chat.status_code, chat.json().get("usage"))
        if adapters:
            lora = httpx.post(f"{url}/v1/completions", timeout=60,
                              json={"model": "sql", "prompt": "select", "max_tokens": 8}).json()  # fmt: skip
            print("adapter:", lora["model"], lora["usage"])
        for streams in (1, 8):
            tps, ttft = asyncio.run(http_run(url, streams * 4, streams, 64, {"ignore_eos": True}))
            print(f"{streams} stream(s): {tps:.0f} tokens/s, TTFT p50 {ttft * 1000:.1f} ms")
        return 0
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
