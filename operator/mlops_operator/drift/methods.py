"""The drift methods' vocabulary, without numpy: their names, which ones are p-value tests, their default
thresholds, and the category that collects values outside a profile's categories. The DriftPolicy API
(``api/v1alpha1/driftpolicy.py``) and the model server's counters (``pod_contract``) use these names; this
package owns them because the statistics define them.
"""

from __future__ import annotations

from typing import Final, Literal

DriftMethod = Literal["auto", "psi", "ks", "chi2", "wasserstein", "jensenshannon"]
#: Methods whose threshold is a p-value (drift when p < threshold); the others are distances (drift when
#: score > threshold).
P_VALUE_METHODS: Final[frozenset[str]] = frozenset({"ks", "chi2"})
#: Threshold of each method when the policy sets none.
DEFAULT_THRESHOLDS: Final[dict[str, float]] = {
    "psi": 0.1,
    "ks": 0.05,
    "chi2": 0.05,
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
}
#: The category name that stands for every category a profile does not list.
OTHER_CATEGORY: Final = "__other__"
