"""What a person reads: exported tables and files, the HTML report, plots, similarity tools, diarization evaluation."""
