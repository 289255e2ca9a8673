# The configuration's [iscsi] section as the iSCSI service's settings.
"""``[iscsi]`` -> :class:`~netstore.iscsi.settings.ServiceSettings`."""

from __future__ import annotations

from netstore.config import IscsiConfig
from netstore.iscsi.settings import ServiceSettings

from .targets import chap_credentials


def iscsi_settings(config: IscsiConfig) -> ServiceSettings:
    """The iSCSI service's settings for an ``[iscsi]`` section."""
    return ServiceSettings(
        portals=tuple(config.portals), discovery_chap=chap_credentials(config.discovery_chap),
        nop_interval_s=config.nop_interval_s, nop_timeout_s=config.nop_timeout_s,
        max_recv_data_segment_length=config.max_recv_data_segment_length)
