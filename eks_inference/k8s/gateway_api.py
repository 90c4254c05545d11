"""The Gateway API CRDs (standard channel) the AWS Load Balancer Controller serves, in the form the cluster gets them.

The controller turns a Gateway of its class into an Application Load Balancer only when the Gateway API CRDs exist
when it starts (its docs, "Gateway API": it detects them and enables the ALB gateway controller), and it ships only
its own CRDs. The upstream release it is built for (``addons.gateway_api``) is kept in full under
``tests/data/crds/`` (the schema checks read it); the cluster gets the same CRDs without their ``description``
fields, which carry no validation: compacted, the largest stays well under the 256 KiB that client-side
``kubectl apply`` can keep in its last-applied annotation, the reason upstream installs them with
``--server-side``. A test keeps this file equal to the compacted upstream copies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GATEWAY_API_VERSION = "v1.6.0"
"""The Gateway API release the controller (chart ``addons.load_balancer_controller_chart``) is built for."""
CRD_KINDS = ("gatewayclasses", "gateways", "httproutes", "grpcroutes")
"""What the controller's ALB gateway controller needs present (its docs, "Configuration")."""
CRDS_FILE = Path(__file__).with_name("gateway_api_crds.json")


def compact_crd(doc: Any) -> Any:
    """``doc`` without its ``description`` fields (of the schema and of the CRD itself)."""
    if isinstance(doc, dict):
        return {k: compact_crd(v) for k, v in doc.items() if k != "description"}
    if isinstance(doc, list):
        return [compact_crd(v) for v in doc]
    return doc


def installed_crds() -> list[dict[str, Any]]:
    """The CRDs the cluster gets, in :data:`CRD_KINDS` order."""
    crds: list[dict[str, Any]] = json.loads(CRDS_FILE.read_text())
    return crds
