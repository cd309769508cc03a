"""The revisions, one per schema change, written by hand; 0001 is the first release's schema."""
