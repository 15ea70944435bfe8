//! SPDY/3.1 framing as kubectl's port-forward speaks it (spdystream): control frames with
//! zlib-compressed header blocks (the client compresses against SPDY's dictionary), data
//! frames per stream. Only what a port-forward uses is understood; other control frames are
//! skipped by their length.

use miniz_oxide::inflate::{
    TINFLStatus,
    core::{DecompressorOxide, decompress, inflate_flags},
};

/// SPDY/3's header-compression dictionary (from the SPDY/3 draft, section 2.6.10.1).
const DICTIONARY: &[u8] = b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// Control frame types.
pub const SYN_STREAM: u16 = 1;
/// SYN_REPLY.
pub const SYN_REPLY: u16 = 2;
/// RST_STREAM.
pub const RST_STREAM: u16 = 3;
/// PING.
pub const PING: u16 = 6;
/// GOAWAY.
pub const GOAWAY: u16 = 7;
/// The FIN flag.
pub const FLAG_FIN: u8 = 0x01;

/// A frame read off the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A control frame: its type, flags and payload.
    Control {
        /// Its type.
        kind: u16,
        /// Its flags.
        flags: u8,
        /// What follows the frame header.
        payload: Vec<u8>,
    },
    /// Data of a stream.
    Data {
        /// The stream.
        stream: u32,
        /// Its flags.
        flags: u8,
        /// The bytes.
        payload: Vec<u8>,
    },
}

/// Why the peer's bytes are not SPDY we understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spdy: {0}")]
pub struct SpdyError(pub String);

/// Splits one frame off the front of `buffer`, if a whole one is there.
pub fn parse_frame(buffer: &[u8]) -> Option<(Frame, usize)> {
    if buffer.len() < 8 {
        return None;
    }
    let length = usize::from(buffer[5]) << 16 | usize::from(buffer[6]) << 8 | usize::from(buffer[7]);
    if buffer.len() < 8 + length {
        return None;
    }
    let flags = buffer[4];
    let payload = buffer[8..8 + length].to_vec();
    let frame = if buffer[0] & 0x80 != 0 {
        Frame::Control { kind: u16::from_be_bytes([buffer[2], buffer[3]]), flags, payload }
    } else {
        Frame::Data {
            stream: u32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) & 0x7fff_ffff,
            flags,
            payload,
        }
    };
    Some((frame, 8 + length))
}

fn header(first: [u8; 4], flags: u8, length: usize) -> Vec<u8> {
    let mut frame = first.to_vec();
    frame.push(flags);
    let length = u32::try_from(length).unwrap_or(0);
    frame.extend_from_slice(&length.to_be_bytes()[1..]);
    frame
}

/// A control frame.
pub fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let [k0, k1] = kind.to_be_bytes();
    let mut frame = header([0x80, 0x03, k0, k1], flags, payload.len());
    frame.extend_from_slice(payload);
    frame
}

/// A data frame.
pub fn data(stream: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = header((stream & 0x7fff_ffff).to_be_bytes(), flags, payload.len());
    frame.extend_from_slice(payload);
    frame
}

/// The peer's header blocks: one zlib stream per connection, compressed against the
/// dictionary, flushed at the end of each block.
#[derive(Default)]
pub struct HeaderReader {
    state: Option<Box<DecompressorOxide>>,
    window: Vec<u8>,
}

impl HeaderReader {
    /// Decompresses one header block and decodes its name/value pairs.
    pub fn read(&mut self, compressed: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut input = compressed;
        if self.state.is_none() {
            // The zlib header, and the dictionary's id when it says one was used.
            let flg = *input.get(1).ok_or_else(|| SpdyError("short zlib header".into()))?;
            if flg & 0x20 != 0 {
                let id = input.get(2..6).ok_or_else(|| SpdyError("short zlib header".into()))?;
                if u32::from_be_bytes([id[0], id[1], id[2], id[3]]) != adler32(DICTIONARY) {
                    return Err(SpdyError("header blocks compressed against an unknown dictionary".into()));
                }
            }
            input = input
                .get(if flg & 0x20 != 0 { 6 } else { 2 }..)
                .ok_or_else(|| SpdyError("short zlib header".into()))?;
            self.state = Some(Box::default());
            self.window = DICTIONARY.to_vec();
        }
        let state = self.state.as_mut().expect("set above");
        let start = self.window.len();
        let flags = inflate_flags::TINFL_FLAG_HAS_MORE_INPUT | inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
        loop {
            if self.window.len() > 4 * 1024 * 1024 {
                return Err(SpdyError("header blocks over 4 MiB".into()));
            }
            let out_pos = self.window.len();
            self.window.resize(out_pos + 16 * 1024, 0);
            let (status, read, written) = decompress(state, input, &mut self.window, out_pos, flags);
            self.window.truncate(out_pos + written);
            input = &input[read..];
            match status {
                TINFLStatus::HasMoreOutput => continue,
                TINFLStatus::NeedsMoreInput | TINFLStatus::Done if input.is_empty() => break,
                TINFLStatus::NeedsMoreInput | TINFLStatus::Done => continue,
                other => return Err(SpdyError(format!("header block: {other:?}"))),
            }
        }
        decode_headers(&self.window[start..])
    }
}

/// zlib's dictionary id.
fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for byte in bytes {
        a = (a + u32::from(*byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    b << 16 | a
}

fn decode_headers(block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let short = || SpdyError("truncated header block".into());
    let mut at = 0;
    let number = |block: &[u8], at: &mut usize| -> Result<usize, SpdyError> {
        let bytes = block.get(*at..*at + 4).ok_or_else(short)?;
        *at += 4;
        Ok(usize::try_from(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])).unwrap_or(usize::MAX))
    };
    let count = number(block, &mut at)?;
    let mut headers = Vec::new();
    for _ in 0..count.min(1024) {
        let text = |block: &[u8], at: &mut usize| -> Result<String, SpdyError> {
            let len = number(block, at)?;
            let bytes = block.get(*at..at.checked_add(len).ok_or_else(short)?).ok_or_else(short)?;
            *at += len;
            Ok(String::from_utf8_lossy(bytes).into_owned())
        };
        let name = text(block, &mut at)?;
        let value = text(block, &mut at)?;
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

/// Our header blocks: a zlib stream of stored blocks (no dictionary needed to read them).
#[derive(Default)]
pub struct HeaderWriter {
    started: bool,
}

impl HeaderWriter {
    /// Encodes and "compresses" one header block.
    pub fn write(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut block = Vec::new();
        let push = |block: &mut Vec<u8>, text: &[u8]| {
            block.extend_from_slice(&u32::try_from(text.len()).unwrap_or(0).to_be_bytes());
            block.extend_from_slice(text);
        };
        block.extend_from_slice(&u32::try_from(headers.len()).unwrap_or(0).to_be_bytes());
        for (name, value) in headers {
            push(&mut block, name.as_bytes());
            push(&mut block, value.as_bytes());
        }
        let mut out = Vec::new();
        if !self.started {
            out.extend_from_slice(&[0x78, 0x01]);
            self.started = true;
        }
        for chunk in block.chunks(0xffff) {
            let len = u16::try_from(chunk.len()).unwrap_or(0);
            out.push(0x00);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // The empty stored block a sync flush ends with, as every SPDY peer's zlib writes it.
        out.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frame = control(SYN_REPLY, 0, &[0, 0, 0, 1]);
        assert_eq!(
            parse_frame(&frame),
            Some((Frame::Control { kind: SYN_REPLY, flags: 0, payload: vec![0, 0, 0, 1] }, 12))
        );
        let frame = data(5, FLAG_FIN, b"abc");
        assert_eq!(
            parse_frame(&frame),
            Some((Frame::Data { stream: 5, flags: FLAG_FIN, payload: b"abc".to_vec() }, 11))
        );
        assert_eq!(parse_frame(&frame[..10]), None);
    }

    #[test]
    fn our_header_blocks_read_back_through_the_dictionary_reader() {
        let mut writer = HeaderWriter::default();
        let mut reader = HeaderReader::default();
        // Our stream has no dictionary flag, so reading it back skips only two bytes.
        let first = writer.write(&[("streamtype", "data"), ("port", "8080")]);
        assert_eq!(
            reader.read(&first).unwrap(),
            [("streamtype".into(), "data".into()), ("port".into(), "8080".into())]
        );
        let second = writer.write(&[("requestid", "0")]);
        assert_eq!(reader.read(&second).unwrap(), [("requestid".into(), "0".into())]);
    }
}
