"""Every live source, in the order the runner starts them. Provider names are the `--provider` values."""

from __future__ import annotations

from connectors.aws import (
    AwsCapacitySource,
    AwsInterruptionSource,
    AwsOnDemandSource,
    AwsSpotAdvisorSource,
    AwsSpotSource,
)
from connectors.azure import AzureEvictionSource, AzurePricesSource
from connectors.base import Source
from connectors.gcp import GcpPreemptionSource, GcpPricesSource
from connectors.lambda_cloud import LambdaSource
from connectors.runpod import RunPodSource
from connectors.vastai import VastSource

SOURCES: tuple[type[Source], ...] = (
    AwsOnDemandSource, AwsSpotSource, AwsCapacitySource, AwsSpotAdvisorSource, AwsInterruptionSource,
    GcpPricesSource, GcpPreemptionSource,
    AzurePricesSource, AzureEvictionSource,
    LambdaSource, RunPodSource, VastSource,
)
PROVIDERS: tuple[str, ...] = tuple(dict.fromkeys(s.provider for s in SOURCES))
