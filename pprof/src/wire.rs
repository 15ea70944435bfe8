//! The protobuf wire format, read incrementally: a [`Stream`] over the decompressed bytes
//! yields one top-level field at a time and either skips its body or reads it into a
//! caller's buffer, and a [`Fields`] cursor walks one buffered message. Every length is
//! checked before anything is allocated for it, so a malformed or hostile profile is an
//! error, never a panic or an allocation the bytes do not pay for.

use std::io::BufRead;

use super::ProfileError;

/// The largest message (a sample, a location, a function, a sample type) read into
/// memory at once. Real profiles stay far below: a Go sample of 128 frames is a few
/// hundred bytes.
pub const MAX_MESSAGE_BYTES: u64 = 1 << 20;

/// Why the bytes are not a `profile.proto` message; `at` is the offset in the
/// decompressed stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The stream ends inside a field.
    #[error("truncated at byte {at}")]
    Truncated {
        /// Where the stream ended.
        at: u64,
    },
    /// A varint runs past 10 bytes.
    #[error("a varint at byte {at} is longer than 10 bytes")]
    Varint {
        /// Where it starts.
        at: u64,
    },
    /// Field number 0 does not exist.
    #[error("field number 0 at byte {at}")]
    FieldZero {
        /// Where the tag is.
        at: u64,
    },
    /// Groups (3, 4) and the unassigned wire types (6, 7).
    #[error("wire type {wire_type} at byte {at}: profile.proto uses only 0, 1, 2 and 5")]
    WireType {
        /// The wire type.
        wire_type: u8,
        /// Where the tag is.
        at: u64,
    },
    /// A known field with the wrong wire type.
    #[error("{what} at byte {at} has wire type {got}, not {expected}")]
    Mismatch {
        /// The field.
        what: &'static str,
        /// Where the tag is.
        at: u64,
        /// The wire type found.
        got: u8,
        /// The wire type profile.proto gives it.
        expected: u8,
    },
    /// A message longer than the agent buffers.
    #[error("a {what} message of {len} bytes at byte {at}; at most {MAX_MESSAGE_BYTES} bytes are read per message")]
    MessageTooLong {
        /// The message.
        what: &'static str,
        /// Its claimed length.
        len: u64,
        /// Where its tag is.
        at: u64,
    },
    /// A nested field runs past the end of its message.
    #[error("a {what} message at byte {at} is malformed: {reason}")]
    Malformed {
        /// The message.
        what: &'static str,
        /// Where it starts.
        at: u64,
        /// What is wrong inside.
        reason: &'static str,
    },
    /// A string table entry that is not UTF-8 (prost refuses those too).
    #[error("string table entry {index} at byte {at} is not UTF-8")]
    Utf8 {
        /// Its index in the string table.
        index: usize,
        /// Where it starts.
        at: u64,
    },
    /// A sample whose stack expands (inlined frames included) past the bound.
    #[error("a sample at byte {at} has more than {max} frames")]
    DeepStack {
        /// Where the sample is.
        at: u64,
        /// The bound.
        max: usize,
    },
    /// More entries of one table than 32-bit indices address.
    #[error("more than 4294967295 {what}")]
    TooMany {
        /// The table.
        what: &'static str,
    },
}

/// The wire types profile.proto uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    /// 0: varint.
    Varint,
    /// 1: eight bytes.
    Fixed64,
    /// 2: length-delimited.
    Len,
    /// 5: four bytes.
    Fixed32,
}

impl WireType {
    fn from_tag(tag: u64) -> Result<Self, u8> {
        match (tag & 7) as u8 {
            0 => Ok(Self::Varint),
            1 => Ok(Self::Fixed64),
            2 => Ok(Self::Len),
            5 => Ok(Self::Fixed32),
            other => Err(other),
        }
    }

    /// The number profile.proto's documentation uses.
    pub fn number(self) -> u8 {
        match self {
            Self::Varint => 0,
            Self::Fixed64 => 1,
            Self::Len => 2,
            Self::Fixed32 => 5,
        }
    }
}

/// A top-level field: number, wire type, and where its tag starts.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Field number.
    pub number: u64,
    /// Wire type.
    pub wire_type: WireType,
    /// Offset of the tag in the decompressed stream.
    pub at: u64,
}

impl Field {
    /// An error unless the field has the wire type profile.proto gives it.
    pub fn expect(&self, what: &'static str, wire_type: WireType) -> Result<(), ProfileError> {
        if self.wire_type == wire_type {
            return Ok(());
        }
        Err(ProfileError::Decode(WireError::Mismatch {
            what,
            at: self.at,
            got: self.wire_type.number(),
            expected: wire_type.number(),
        }))
    }
}

/// The decompressed profile as a stream of top-level fields, refusing to read past
/// `limit` bytes (the reader must yield at most `limit + 1`: see [`super::open`]).
pub struct Stream<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: BufRead> Stream<R> {
    /// A stream over `inner` that fails with `TooLarge` once more than `limit` bytes came.
    pub fn new(inner: R, limit: u64) -> Self {
        Self { inner, read: 0, limit }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.read
    }

    fn fill(&mut self) -> Result<&[u8], ProfileError> {
        if self.read > self.limit {
            return Err(ProfileError::TooLarge { limit: self.limit });
        }
        self.inner.fill_buf().map_err(ProfileError::Gzip)
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.read += n as u64;
    }

    fn truncated(&self) -> ProfileError {
        if self.read > self.limit {
            ProfileError::TooLarge { limit: self.limit }
        } else {
            ProfileError::Decode(WireError::Truncated { at: self.read })
        }
    }

    fn varint(&mut self) -> Result<u64, ProfileError> {
        let at = self.read;
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = match self.fill()?.first() {
                Some(b) => *b,
                None => return Err(self.truncated()),
            };
            self.consume(1);
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(ProfileError::Decode(WireError::Varint { at }))
    }

    /// The next top-level field's tag, or `None` at the end of the stream.
    pub fn next_field(&mut self) -> Result<Option<Field>, ProfileError> {
        let at = self.read;
        if self.fill()?.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let wire_type =
            WireType::from_tag(tag).map_err(|wire_type| ProfileError::Decode(WireError::WireType { wire_type, at }))?;
        let number = tag >> 3;
        if number == 0 {
            return Err(ProfileError::Decode(WireError::FieldZero { at }));
        }
        Ok(Some(Field { number, wire_type, at }))
    }

    /// A varint field's value.
    pub fn read_varint(&mut self) -> Result<u64, ProfileError> {
        self.varint()
    }

    /// A length-delimited field's length.
    pub fn read_len(&mut self) -> Result<u64, ProfileError> {
        self.varint()
    }

    /// Skips a field's body of the given wire type.
    pub fn skip(&mut self, wire_type: WireType) -> Result<(), ProfileError> {
        match wire_type {
            WireType::Varint => self.varint().map(drop),
            WireType::Fixed64 => self.skip_bytes(8),
            WireType::Fixed32 => self.skip_bytes(4),
            WireType::Len => {
                let len = self.read_len()?;
                self.skip_bytes(len)
            }
        }
    }

    /// Skips `n` bytes without keeping them.
    pub fn skip_bytes(&mut self, mut n: u64) -> Result<(), ProfileError> {
        while n > 0 {
            let available = self.fill()?.len() as u64;
            if available == 0 {
                return Err(self.truncated());
            }
            let step = available.min(n);
            self.consume(step as usize);
            n -= step;
        }
        Ok(())
    }

    /// Appends the next `n` bytes to `out`; the caller has made room (and paid for it).
    pub fn read_into(&mut self, out: &mut Vec<u8>, mut n: u64) -> Result<(), ProfileError> {
        while n > 0 {
            let chunk = self.fill()?;
            if chunk.is_empty() {
                return Err(self.truncated());
            }
            let step = (chunk.len() as u64).min(n) as usize;
            out.extend_from_slice(&chunk[..step]);
            self.consume(step);
            n -= step as u64;
        }
        Ok(())
    }

    /// Reads everything left, keeping nothing, up to the limit: how a profile that fails
    /// to parse is still told apart from one that is too large (or not gzip at all).
    pub fn drain(&mut self) -> Result<(), ProfileError> {
        loop {
            let n = self.fill()?.len();
            if n == 0 {
                return Ok(());
            }
            self.consume(n);
        }
    }
}

/// A cursor over one buffered message's fields.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
    at: u64,
}

/// A field inside a message.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// A varint.
    Varint(u64),
    /// Fixed-size or length-delimited bytes.
    Bytes(&'a [u8]),
}

impl<'a> Fields<'a> {
    /// The fields of the `what` message `buf`, found at `at` (both for errors).
    pub fn new(buf: &'a [u8], what: &'static str, at: u64) -> Self {
        Self { buf, pos: 0, what, at }
    }

    fn malformed(&self, reason: &'static str) -> ProfileError {
        ProfileError::Decode(WireError::Malformed { what: self.what, at: self.at, reason })
    }

    fn varint(&mut self) -> Result<u64, ProfileError> {
        let (value, used) = varint(&self.buf[self.pos..]).ok_or_else(|| self.malformed("a bad varint"))?;
        self.pos += used;
        Ok(value)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], ProfileError> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(self.malformed("a field runs past its end"));
        }
        let bytes = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(bytes)
    }

    /// The next field as (number, value), or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, ProfileError> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = tag >> 3;
        if number == 0 {
            return Err(self.malformed("field number 0"));
        }
        let value = match WireType::from_tag(tag).map_err(|_| self.malformed("an unsupported wire type"))? {
            WireType::Varint => Value::Varint(self.varint()?),
            WireType::Fixed64 => Value::Bytes(self.take(8)?),
            WireType::Fixed32 => Value::Bytes(self.take(4)?),
            WireType::Len => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
        };
        Ok(Some((number, value)))
    }

    /// A scalar field's value; an error when it is not a varint.
    pub fn expect_varint(&self, value: Value<'a>) -> Result<u64, ProfileError> {
        match value {
            Value::Varint(v) => Ok(v),
            Value::Bytes(_) => Err(self.malformed("a scalar field that is not a varint")),
        }
    }

    /// A nested message's bytes; an error when the field is a varint.
    pub fn expect_bytes(&self, value: Value<'a>) -> Result<&'a [u8], ProfileError> {
        match value {
            Value::Bytes(b) => Ok(b),
            Value::Varint(_) => Err(self.malformed("a message field that is a varint")),
        }
    }

    /// Each element of a repeated varint field, packed or not.
    pub fn each_varint(
        &self,
        value: Value<'a>,
        mut f: impl FnMut(u64) -> Result<(), ProfileError>,
    ) -> Result<(), ProfileError> {
        match value {
            Value::Varint(v) => f(v),
            Value::Bytes(mut packed) => {
                while !packed.is_empty() {
                    let (v, used) = varint(packed).ok_or_else(|| self.malformed("a bad packed varint"))?;
                    packed = &packed[used..];
                    f(v)?;
                }
                Ok(())
            }
        }
    }
}

/// A varint at the start of `buf` and its length, or `None` when it is truncated or longer
/// than 10 bytes.
fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in buf.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if *byte < 0x80 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_their_bounds() {
        assert_eq!(varint(&[0x96, 0x01]), Some((150, 2)));
        assert_eq!(varint(&[0xff; 10][..]), None, "no terminating byte within 10");
        assert_eq!(varint(&[0x80]), None, "truncated");
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(varint(&max), Some((u64::MAX, 10)));
    }

    #[test]
    fn a_huge_claimed_length_allocates_nothing_and_fails_as_truncated() {
        // Field 6 (a string), length 2^62: skipping reads what is there, then stops.
        let mut bytes = vec![0x32];
        let mut len = 1u64 << 62;
        while len >= 0x80 {
            bytes.push((len as u8) | 0x80);
            len >>= 7;
        }
        bytes.push(len as u8);
        bytes.extend_from_slice(b"abc");
        let mut s = Stream::new(&bytes[..], 1 << 20);
        let f = s.next_field().unwrap().unwrap();
        assert_eq!((f.number, f.wire_type), (6, WireType::Len));
        let err = s.skip(f.wire_type).unwrap_err();
        assert!(matches!(err, ProfileError::Decode(WireError::Truncated { .. })), "{err}");
    }

    #[test]
    fn past_the_limit_is_too_large_not_truncated() {
        let bytes = [0x32, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let limit = 4;
        let mut s = Stream::new(std::io::Read::take(&bytes[..], limit + 1), limit);
        let f = s.next_field().unwrap().unwrap();
        let err = s.skip(f.wire_type).unwrap_err();
        assert!(matches!(err, ProfileError::TooLarge { limit: 4 }), "{err}");
    }
}
