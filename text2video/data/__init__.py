"""Datasets: folders of videos with captions, CSV manifests, MSR-VTT, built-in synthetic sets."""
