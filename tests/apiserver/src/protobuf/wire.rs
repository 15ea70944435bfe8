//! Protocol buffers' wire format: varints, keys and the four wire types Kubernetes' messages
//! use (varint, 64-bit, length-delimited; 32-bit only to be skipped).

/// A field's payload as read from the wire.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    Varint(u64),
    Fixed64(u64),
    /// Read past; no Kubernetes message has 32-bit fixed fields.
    Fixed32,
    Bytes(&'a [u8]),
}

/// Wire type of varints.
pub const VARINT: u8 = 0;
/// Wire type of 64-bit fixed values.
pub const FIXED64: u8 = 1;
/// Wire type of length-delimited values.
pub const LEN: u8 = 2;
/// Wire type of 32-bit fixed values.
pub const FIXED32: u8 = 5;

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_key(out: &mut Vec<u8>, tag: u32, wire: u8) {
    put_varint(out, (u64::from(tag) << 3) | u64::from(wire));
}

pub fn put_bytes(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_key(out, tag, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint(input: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first().ok_or("truncated varint")?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if input.len() < n {
        return Err(format!("field of {n} bytes runs past the end of its message"));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

/// Every field of a message, in wire order.
pub fn fields(mut input: &[u8]) -> Result<Vec<(u32, Payload<'_>)>, String> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let key = varint(&mut input)?;
        let tag = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        let payload = match (key & 7) as u8 {
            VARINT => Payload::Varint(varint(&mut input)?),
            FIXED64 => Payload::Fixed64(u64::from_le_bytes(take(&mut input, 8)?.try_into().expect("8 bytes"))),
            LEN => {
                let n = usize::try_from(varint(&mut input)?).map_err(|_| "length out of range")?;
                Payload::Bytes(take(&mut input, n)?)
            }
            FIXED32 => {
                take(&mut input, 4)?;
                Payload::Fixed32
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        out.push((tag, payload));
    }
    Ok(out)
}

/// The varints of a packed repeated field.
pub fn packed_varints(mut input: &[u8]) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    while !input.is_empty() {
        out.push(varint(&mut input)?);
    }
    Ok(out)
}
