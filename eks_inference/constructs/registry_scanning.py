"""Scan on push for the images ``cdk deploy`` builds: the ECR registry's scanning configuration.

``DockerImageAsset`` pushes to the CDK bootstrap repository (``cdk-<qualifier>-container-assets-<account>-<region>``),
which the bootstrap template creates with immutable tags but no scanning (aws-cdk, ``bootstrap-template.yaml``,
``ContainerAssetsRepository``). A repository's own ``scanOnPush`` is superseded by the registry's scanning
configuration (ECR User Guide, "Scan images for software vulnerabilities"), so the setting goes there: one
``AWS::ECR::RegistryScanningConfiguration`` per account and region, whose rules name repositories by wildcard. Basic
scanning covers the operating system's packages at no charge; enhanced scanning (Amazon Inspector) adds language
packages such as the images' pip set and rescans as new findings are published, at a charge per image.
"""

from __future__ import annotations

from aws_cdk import aws_ecr as ecr
from constructs import Construct

from eks_inference.config import ConfigError, ImageScanning

ASSET_REPOSITORIES = "cdk-*-container-assets-*"
"""The CDK bootstrap repositories that ``cdk deploy`` pushes images to, whatever the qualifier."""
EVERY_REPOSITORY = "*"


def _rule(frequency: str, repositories: str) -> ecr.CfnRegistryScanningConfiguration.ScanningRuleProperty:
    return ecr.CfnRegistryScanningConfiguration.ScanningRuleProperty(
        scan_frequency=frequency,
        repository_filters=[ecr.CfnRegistryScanningConfiguration.RepositoryFilterProperty(
            filter=repositories, filter_type="WILDCARD")])


class RegistryScanning(Construct):
    """The account's ECR registry scans every pushed image, ``self.configuration``.

    :param scanning: ``ImageScanning.BASIC`` (default): scan on push for every repository of the account and region,
        so the setting only ever adds scans (repositories that scanned on push by their own setting still do).
        ``ImageScanning.ENHANCED``: Amazon Inspector, continuously for the CDK asset repositories and on push for
        every other. ``ImageScanning.ACCOUNT`` is refused: build no RegistryScanning to leave the registry alone.
    """

    def __init__(self, scope: Construct, construct_id: str, *, scanning: ImageScanning = ImageScanning.BASIC) -> None:
        if scanning not in (ImageScanning.BASIC, ImageScanning.ENHANCED):
            raise ConfigError(f"RegistryScanning scanning: {scanning!r} sets nothing; give ImageScanning.BASIC or "
                              "ENHANCED, or build no RegistryScanning to leave the account's setting as it is")
        super().__init__(scope, construct_id)
        if scanning is ImageScanning.BASIC:
            rules = [_rule("SCAN_ON_PUSH", EVERY_REPOSITORY)]
        else:
            rules = [_rule("CONTINUOUS_SCAN", ASSET_REPOSITORIES), _rule("SCAN_ON_PUSH", EVERY_REPOSITORY)]
        self.configuration = ecr.CfnRegistryScanningConfiguration(
            self, "Configuration", scan_type=scanning.name, rules=rules)

    @classmethod
    def unless_account(cls, scope: Construct, construct_id: str, *,
                       scanning: ImageScanning) -> RegistryScanning | None:
        """The construct for ``basic`` or ``enhanced``; none for ``account``, which leaves the registry alone."""
        return None if scanning is ImageScanning.ACCOUNT else cls(scope, construct_id, scanning=scanning)
