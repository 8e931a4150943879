"""sEMG electrodes drawn at published facial-EMG sites: sites (data), layout geometry, rendering, the editor."""

from editors.electrodes.editor import ElectrodeEditor
from editors.electrodes.sites import DATA_DIR, SCHEMES, load_site_table, select_sites

__all__ = ["DATA_DIR", "SCHEMES", "ElectrodeEditor", "load_site_table", "select_sites"]
