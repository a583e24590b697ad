"""What a route may ask for: the platform's services, each as a typed dependency.

@router.get("/apps/{app}/config")
def get_config(app: str, store: StoreDep) -> dict[str, str]: ...
"""

from __future__ import annotations

__all__ = [
    "DeployerDep",
    "GpusDep",
    "MeterDep",
    "PlatformDep",
    "ReconcilerDep",
    "ReleaserDep",
    "SettingsDep",
    "StoreDep",
    "get_platform",
    "get_store",
]

from typing import Annotated

from fastapi import Depends, Request

from kiln.control.platform import Platform
from kiln.deploy import Deployer
from kiln.errors import Unavailable
from kiln.gpu.cluster import GpuCluster
from kiln.release.releaser import Releaser
from kiln.route.meter import RequestMeter
from kiln.run.reconciler import Reconciler
from kiln.settings import Settings
from kiln.store import Store


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def get_store(request: Request) -> Store:
    return get_platform(request).store


def get_settings(request: Request) -> Settings:
    return get_platform(request).settings


def get_reconciler(request: Request) -> Reconciler:
    """The reconciler; 503 on a control plane that does not run apps."""
    reconciler = get_platform(request).reconciler
    if reconciler is None:
        raise Unavailable(
            "this control plane does not run apps (started with --no-run); start it with kiln up",
            code="run_stage_off",
        )
    return reconciler


def get_gpus(request: Request) -> GpuCluster:
    return get_platform(request).gpus


def get_releaser(request: Request) -> Releaser:
    return get_platform(request).releaser


def get_deployer(request: Request) -> Deployer:
    return get_platform(request).deployer


def get_meter(request: Request) -> RequestMeter:
    return get_platform(request).meter


PlatformDep = Annotated[Platform, Depends(get_platform)]
StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ReleaserDep = Annotated[Releaser, Depends(get_releaser)]
ReconcilerDep = Annotated[Reconciler, Depends(get_reconciler)]
GpusDep = Annotated[GpuCluster, Depends(get_gpus)]
DeployerDep = Annotated[Deployer, Depends(get_deployer)]
MeterDep = Annotated[RequestMeter, Depends(get_meter)]
