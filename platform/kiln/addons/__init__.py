"""Managed add-ons: attaching one provisions a resource and injects its settings as config vars
(a new release); detaching removes both. One module per provider."""
