"""Pytest plugin: one local Ray cluster per test session, bound to 127.0.0.1 and shut down at the end.

It starts after the S3 test server, so Ray's workers inherit the AWS endpoint and credentials.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def ray_local(s3_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import ray

    if ray.is_initialized():
        raise RuntimeError("a Ray cluster is already attached; tests start their own")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield
    finally:
        ray.shutdown()
