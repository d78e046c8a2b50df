"""mlops.dev/v1alpha1: names shared by every layer (group, version, kinds, label prefix)."""

from typing import Final

GROUP: Final = "mlops.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CATEGORY: Final = "mlops"

#: Prefix of every label and annotation the project sets (kopf's own annotations included).
LABEL_PREFIX: Final = "mlops.dev/"
#: Field manager used for every server-side apply the operator performs.
FIELD_MANAGER: Final = "mlops-operator"
