"""Answer quality: checks, confidence, judged samples."""
