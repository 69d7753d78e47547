"""The data audit: label issues, duplicates and leakage, outliers and overlapping classes,
from the features the frozen backbone computed (``findings``), written as a CSV, a list
for ``train --exclude`` and a page (``page``) by the ``audit`` verb (``command``)."""

from resnet_transfer.audit.command import AUDIT_FILES, audit_data, audit_features, audit_run

__all__ = ["AUDIT_FILES", "audit_data", "audit_features", "audit_run"]
