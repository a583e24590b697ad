"""vLLM's figures as supervisors ship them: read from the engine's /metrics text, turned into
kiln ps's ENGINE column and the platform's /metrics with app and dyno labels."""

import json
import time

import pytest

from kiln.models import LogRecord, LogSource
from kiln.run.engine_metrics import figures, latest, summarize
from kiln.run.logs import append_records
from kiln.settings import Settings

# As vLLM 0.32's server writes it (trimmed): two models (base and an adapter) per family.
VLLM_TEXT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 1.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.125
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="tiny"} 500.0
vllm:generation_tokens_created{engine="0",model_name="tiny"} 1.79e+09
# TYPE vllm:request_success counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="tiny"} 3.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"} 7.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="tiny"} 10.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 10.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} 10.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny"} 0.5
# TYPE python_gc_objects_collected counter
python_gc_objects_collected_total{generation="0"} 123.0
"""


def test_a_scrape_is_summed_over_models_and_reasons_and_the_rest_left_out() -> None:
    summary = summarize(VLLM_TEXT)
    assert summary == {
        "vllm:num_requests_running": 2.0, "vllm:num_requests_waiting": 1.0,
        "vllm:kv_cache_usage_perc": 0.125, "vllm:generation_tokens_total": 500.0,
        "vllm:request_success_total": 10.0, "vllm:time_to_first_token_seconds_count": 10.0,
        "vllm:time_to_first_token_seconds_sum": 0.5,
    }  # fmt: skip


def test_figures_a_dyno_makes_up_cannot_break_what_reads_them() -> None:
    huge = 'vllm:num_requests_running{m="a"} 1e308\nvllm:num_requests_running{m="b"} 1e308\n'
    assert summarize(huge + "vllm:kv_cache_usage_perc 1e307\nvllm:num_requests_waiting NaN\n") == {}
    made = figures([(1.0, {"vllm:num_requests_running": 2.0})])
    assert made is not None and made.running == 2


def test_a_stored_manifest_that_no_longer_reads_is_no_llm_app() -> None:
    from types import SimpleNamespace

    from kiln.run.engine_metrics import llm_apps

    deployed = [SimpleNamespace(app="old", manifest='{"runtime": "cobol"}'),
                SimpleNamespace(app="chat", manifest='{"runtime": "llm", "model": "org/m"}')]  # fmt: skip
    assert llm_apps(deployed) == {"chat"}  # type: ignore[arg-type]


def test_a_dyno_that_is_not_vllm_reports_nothing() -> None:
    assert summarize("python_gc_objects_collected_total 1.0\n") is None
    assert summarize("<html>not metrics</html>\n{") is None
    assert summarize("") is None


def test_rates_and_ttft_come_from_the_last_two_reports() -> None:
    first = summarize(VLLM_TEXT)
    assert first is not None
    second = {**first, "vllm:generation_tokens_total": 1500.0,
              "vllm:time_to_first_token_seconds_count": 20.0,
              "vllm:time_to_first_token_seconds_sum": 2.5}  # fmt: skip
    made = figures([(100.0, first), (110.0, second)])
    assert made is not None
    assert (made.running, made.waiting, made.kv_cache_percent) == (2, 1, 12.5)
    assert made.tokens_per_s == 100.0  # 1000 tokens in 10 s
    assert made.ttft_ms == 200.0  # the last 10 requests: 2.0 s over 10
    alone = figures([(100.0, first)])
    assert alone is not None and alone.tokens_per_s is None and alone.ttft_ms == 50.0


def test_ps_and_metrics_show_each_vllm_dynos_figures(settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from kiln.api import create_app
    from kiln.control.platform import Platform
    from tests.run.test_reconciler import running_apps, sorted_labels

    store, reconciler = running_apps(
        settings, {"chat": 'runtime = "llm"\nmodel = "org/m"\n', "web": ""}
    )
    summary = summarize(VLLM_TEXT)
    now = time.time()
    stale = LogRecord(ts=now - 600, source=LogSource.METRICS, process="dyno.old999",
                      line=json.dumps(summary))  # fmt: skip
    reports = [
        LogRecord(ts=now - 10 + i * 5, source=LogSource.METRICS, process="dyno.abc123",
                  line=json.dumps({**summary, "vllm:generation_tokens_total": 500.0 + i * 250}))
        for i in range(2)
    ]  # fmt: skip
    bogus = [LogRecord(ts=now - 8, source=LogSource.METRICS, process="dyno.bad000", line=line)
             for line in ("not json", '{"vllm:num_requests_running": Infinity}', "[1, 2]")]  # fmt: skip
    append_records(settings.log_dir, "chat", [stale, *bogus, *reports])
    token = store.create_token("t").token
    with TestClient(create_app(Platform(settings, store=store, reconciler=reconciler))) as api:
        api.headers["Authorization"] = f"Bearer {token}"
        chat = api.get("/apps/chat/ps").json()
        web = api.get("/apps/web/ps").json()
        metrics = api.get("/metrics").text.splitlines()
        logs = [json.loads(line) for line in api.get("/apps/chat/logs").text.splitlines()]
        shown = [json.loads(line) for line in
                 api.get("/apps/chat/logs", params={"source": "metrics"}).text.splitlines()]  # fmt: skip
    engine = chat["replicas"][0]["engine"]
    assert engine["running"] == 2 and engine["tokens_per_s"] == 50.0 and engine["ttft_ms"] == 50.0
    assert web["replicas"][0]["engine"] is None
    samples = [" ".join(sorted_labels(line)) for line in metrics]
    assert 'vllm:num_requests_running{app="chat",dyno="dyno.abc123"} 2.0' in samples
    assert 'vllm:generation_tokens_total{app="chat",dyno="dyno.abc123"} 750.0' in samples
    assert 'vllm:time_to_first_token_seconds_count{app="chat",dyno="dyno.abc123"} 10.0' in samples
    assert not any("dyno.old999" in line for line in metrics)  # a dyno gone ten minutes
    assert not any(r["source"] == "metrics" for r in logs)  # machine-read: not in kiln logs
    assert len(shown) == 6  # unless asked for
    assert set(latest(settings.log_dir, "chat")) == {"dyno.abc123"}


def test_a_scrape_reads_a_body_that_comes_in_many_chunks_and_refuses_a_flood() -> None:
    import asyncio

    from aiohttp import web

    from kiln.route.upstream import Upstream
    from kiln.run import engine_metrics

    padding = "".join(f'python_info{{n="{i}"}} 1.0\n' for i in range(4000))  # ~100 KB first

    async def metrics(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        text = (padding + VLLM_TEXT).encode()
        for start in range(0, len(text), 1000):  # as a busy server sends it: bit by bit
            await response.write(text[start : start + 1000])
        return response

    async def flood(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(10_000):  # 10 GB if read to the end
            await response.write(b"#" * (1 << 20))
        return response

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="python_gc_objects_collected_total 1.0\n")

    async def run() -> tuple[object, object]:
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/flood", flood)
        app.router.add_get("/plain", plain)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            dyno = Upstream(f"http://127.0.0.1:{port}")
            found = (await engine_metrics.scrape(dyno, "/metrics"),
                     await engine_metrics.scrape(dyno, "/flood"))  # fmt: skip
            for not_vllm in ("/none", "/plain"):  # no /metrics; another app's metrics
                with pytest.raises(engine_metrics.NotAnEngine):
                    await engine_metrics.scrape(dyno, not_vllm)
            dyno.close()
            return found
        finally:
            await runner.cleanup()

    whole, flooded = asyncio.run(run())
    assert whole == summarize(VLLM_TEXT)
    assert flooded is None
