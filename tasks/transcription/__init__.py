"""Speech transcription: SenseVoice (through funasr's own model code) and caption output.

* :mod:`tasks.transcription.sensevoice`: load a local SenseVoiceSmall directory safely and
  transcribe 16 kHz clips, with exactly funasr's text and word times, plus the language,
  emotion and audio events SenseVoice tags its output with.
* :mod:`tasks.transcription.captions`: assign timed words to speaker segments; SRT and WebVTT.
* :mod:`tasks.transcription.testmodel`: randomly initialised SenseVoiceSmall directories for
  tests and benchmarks (their transcripts mean nothing).
"""
