"""The results explorer (`eald-report ... --html DIR`): a static site, see build.py."""
