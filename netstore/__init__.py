"""netstore: an iSCSI target with VirtualBox-style disk modes and a learning virtual switch."""

__version__ = "0.1.0"
