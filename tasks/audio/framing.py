"""Whether a raw stream's last frame is whole: MP3, ADTS AAC and Ogg (Vorbis, Opus, FLAC in Ogg).

These formats need not declare their duration (an MP3 without a Xing/Info header, an ADTS
stream, an Ogg file: ffprobe derives the duration from what is there), so a file cut short, or
still being copied, decodes without an error to a shorter recording. Their framing tells it: every
MP3/ADTS frame header gives the frame's length, every Ogg page header its size, and a complete Ogg
logical stream ends with a page flagged end-of-stream. :func:`stream_cut` walks the frames or
pages (headers only; about 0.1 s for an hour of MP3) and says why the end is cut.

A cut that falls exactly on a frame boundary of an MP3 or ADTS stream cannot be told from a
complete stream this way; Ogg's end-of-stream flag catches that case too.
"""

from __future__ import annotations

import mmap
import os
import struct

# MPEG audio bitrates (kbit/s) by [version is MPEG-1][layer] and index; sample rates by version
_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # MPEG-1, 2, 2.5
_END_TAGS = (b"TAG", b"APETAGEX", b"LYRICS")


def _mpeg_frame_length(h: int) -> int | None:
    """Length in bytes of the MPEG audio frame with 32-bit header ``h``; None if not a header
    (or a free-format frame, whose length the header does not give)."""
    if (h >> 21) & 0x7FF != 0x7FF:
        return None
    version, layer_bits = (h >> 19) & 3, (h >> 17) & 3
    bitrate_i, rate_i, padding = (h >> 12) & 0xF, (h >> 10) & 3, (h >> 9) & 1
    if version == 1 or layer_bits == 0 or bitrate_i in (0, 15) or rate_i == 3:
        return None
    layer = 4 - layer_bits
    mpeg1 = version == 3
    bitrate = _BITRATES[(mpeg1, layer)][bitrate_i] * 1000
    rate = _RATES[version][rate_i]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    per = 144 if (layer == 2 or mpeg1) else 72
    return per * bitrate // rate + padding


def _adts_frame_length(buf: "mmap.mmap | bytes", pos: int) -> int | None:
    if pos + 7 > len(buf) or buf[pos] != 0xFF or buf[pos + 1] & 0xF6 != 0xF0:
        return None
    length = ((buf[pos + 3] & 3) << 11) | (buf[pos + 4] << 3) | (buf[pos + 5] >> 5)
    return length if length >= 7 else None


def _id3v2_size(buf: "mmap.mmap | bytes") -> int:
    if len(buf) >= 10 and buf[:3] == b"ID3":
        size = 0
        for b in buf[6:10]:
            size = (size << 7) | (b & 0x7F)
        return 10 + size + (10 if buf[5] & 0x10 else 0)
    return 0


def _frames_cut(buf: "mmap.mmap | bytes", start: int, *, adts: bool) -> str | None:
    size, pos, frames = len(buf), start, 0
    kind = "ADTS AAC" if adts else "MP3"
    while pos < size:
        if any(buf[pos:pos + len(tag)] == tag for tag in _END_TAGS):
            return None  # trailing tags (ID3v1, APE, Lyrics3): the audio ended before them
        if size - pos < (7 if adts else 4):
            return f"the last {kind} frame is cut ({size - pos} byte(s) of its header)" if frames else None
        length = (_adts_frame_length(buf, pos) if adts
                  else _mpeg_frame_length(struct.unpack(">I", buf[pos:pos + 4])[0]))
        if length is None:
            return None  # not framed as expected (free format, junk): cannot tell, say nothing
        if pos + length > size:
            return f"the last {kind} frame is cut ({size - pos} of its {length} bytes)"
        pos += length
        frames += 1
    return None


def _ogg_cut(buf: "mmap.mmap | bytes") -> str | None:
    size, pos = len(buf), 0
    open_streams: dict[int, int] = {}  # serial -> pages seen, until its end-of-stream page
    while pos < size:
        if size - pos < 27:
            return f"the last Ogg page is cut ({size - pos} byte(s) of its header)"
        if buf[pos:pos + 4] != b"OggS":
            return None  # not a page where one should be: corrupt, not our question
        flags = buf[pos + 5]
        serial = struct.unpack("<I", buf[pos + 14:pos + 18])[0]
        nsegs = buf[pos + 26]
        if pos + 27 + nsegs > size:
            return "the last Ogg page is cut (in its segment table)"
        length = 27 + nsegs + sum(buf[pos + 27:pos + 27 + nsegs])
        if pos + length > size:
            return f"the last Ogg page is cut ({size - pos} of its {length} bytes)"
        open_streams[serial] = open_streams.get(serial, 0) + 1
        if flags & 0x04:
            open_streams.pop(serial, None)
        pos += length
    if open_streams:
        return "the Ogg stream has no end-of-stream page (cut between pages?)"
    return None


def stream_cut(path: str | os.PathLike[str]) -> str | None:
    """Why the end of ``path``'s MP3, ADTS AAC or Ogg stream is cut (one line), or None: the last
    frame is whole, the file is another format, or its framing cannot be followed."""
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size < 4:
                return None
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                if buf[:4] == b"OggS":
                    return _ogg_cut(buf)
                start = _id3v2_size(buf)
                if start + 4 > len(buf):
                    return "cut inside its ID3v2 tag" if start > len(buf) else None
                if _adts_frame_length(buf, start) is not None:
                    return _frames_cut(buf, start, adts=True)
                if _mpeg_frame_length(struct.unpack(">I", buf[start:start + 4])[0]) is not None:
                    return _frames_cut(buf, start, adts=False)
    except (OSError, ValueError, struct.error):
        return None
    return None
