"""The software inventory of each layer, read in format's one pass over it
(issue 13). :class:`InventoryCollector` is the hook the layer reader calls;
the parsers are one module per database family."""

from pullguard.services.format.inventory.collector import InventoryCollector

__all__ = ["InventoryCollector"]
