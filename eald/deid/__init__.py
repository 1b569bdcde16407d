"""De-identification of faces and voices in long videos, and the privacy audit."""
