//! Indenting a JSON document byte by byte: the layout of
//! `serde_json::to_writer_pretty` (two spaces, `"key": value`, `[]` and
//! `{}` when empty) without parsing the document into values or tokens.
//! For documents already validated (the client checked the daemon's line):
//! the bytes between the structural characters are copied as they are.

use std::io::{self, Write};

const INDENT: &[u8] = b"  ";

/// Write `json` indented to `out`, followed by a newline. `json` must be
/// valid JSON: this only moves whitespace (an invalid document comes out
/// as invalid, never longer than its input plus the indentation).
pub fn write_indented(json: &[u8], out: &mut impl Write) -> io::Result<()> {
    let mut buf = Vec::with_capacity(CHUNK * 2);
    indent_into(json, &mut buf, &mut |buf: &mut Vec<u8>| {
        out.write_all(buf)?;
        buf.clear();
        Ok(())
    })?;
    buf.push(b'\n');
    out.write_all(&buf)
}

/// Bytes gathered before they are written: the document streams through a
/// small buffer (a whole indented copy of a big one would cost its pages).
const CHUNK: usize = 256 * 1024;

/// A newline and the indentation of `depth`.
fn newline(buf: &mut Vec<u8>, depth: usize) {
    const PAD: &[u8] = b"\n                                                                ";
    let n = depth * INDENT.len();
    match PAD.get(..1 + n) {
        Some(line) => buf.extend_from_slice(line),
        None => {
            buf.extend_from_slice(PAD);
            for _ in (PAD.len() - 1) / INDENT.len()..depth {
                buf.extend_from_slice(INDENT);
            }
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Does the byte after `i` (whitespace skipped) close the container
/// opened at `i`? Then that is where it closes.
fn closes_at(json: &[u8], i: usize) -> Option<usize> {
    let close = if json[i] == b'{' { b'}' } else { b']' };
    let j = i + 1 + json[i + 1..].iter().take_while(|&&b| is_space(b)).count();
    (json.get(j) == Some(&close)).then_some(j)
}

/// Indent `json` into `buf`, handing it to `flush` whenever it holds
/// [`CHUNK`] bytes or more.
fn indent_into(
    json: &[u8],
    buf: &mut Vec<u8>,
    flush: &mut impl FnMut(&mut Vec<u8>) -> io::Result<()>,
) -> io::Result<()> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < json.len() {
        if buf.len() >= CHUNK {
            flush(buf)?;
        }
        let b = json[i];
        match b {
            b'"' => {
                // A string, copied whole: up to the first quote that no
                // backslash escapes.
                let mut j = i + 1;
                while j < json.len() {
                    match json[j..].iter().position(|&b| b == b'"' || b == b'\\') {
                        Some(k) if json[j + k] == b'"' => {
                            j += k;
                            break;
                        }
                        Some(k) => j += k + 2,
                        None => j = json.len(),
                    }
                }
                let end = (j + 1).min(json.len());
                buf.extend_from_slice(&json[i..end]);
                i = end;
                continue;
            }
            b'{' | b'[' => match closes_at(json, i) {
                Some(j) => {
                    buf.push(b);
                    buf.push(json[j]);
                    i = j;
                }
                None => {
                    buf.push(b);
                    depth += 1;
                    newline(buf, depth);
                }
            },
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(buf, depth);
                buf.push(b);
            }
            b',' => {
                buf.push(b',');
                newline(buf, depth);
            }
            b':' => buf.extend_from_slice(b": "),
            b if is_space(b) => {}
            _ => {
                // A number or a literal: up to the next structural byte.
                let n = json[i..]
                    .iter()
                    .take_while(|&&b| {
                        !matches!(b, b',' | b'}' | b']' | b':' | b'"') && !is_space(b)
                    })
                    .count();
                buf.extend_from_slice(&json[i..i + n]);
                i += n;
                continue;
            }
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indented(json: &str) -> String {
        let mut out = Vec::new();
        write_indented(json.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// serde_json's own pretty printer, keys in the document's order.
    fn serde_pretty(json: &str) -> String {
        let mut out = Vec::new();
        let mut de = serde_json::Deserializer::from_str(json);
        let mut ser = serde_json::Serializer::pretty(&mut out);
        serde_transcode::transcode(&mut de, &mut ser).unwrap();
        out.push(b'\n');
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_indented_document_is_the_same_json_laid_out_as_serde_does() {
        let docs = [
            r#"{"a":1,"b":[1,2,{"c":null}],"d":{},"e":[],"f":"x"}"#,
            r#"{"s":"a,b:{c}[d] \"q\" \\","t":"\\","u":"é\u0001\n\t","n":-1.5e-7}"#,
            r#"[[],[{}],[[1]],true,false,null,"",0]"#,
            r#"{ "spaced" : [ 1 , 2 ] , "empty" : { } , "e2" : [ ] }"#,
            "{\"nl\":\n[\r\n1\t]}",
            "42",
            r#""just a string""#,
            "[]",
        ];
        for doc in docs {
            let got = indented(doc);
            let want: serde_json::Value = serde_json::from_str(doc).unwrap();
            let back: serde_json::Value = serde_json::from_str(&got).unwrap();
            assert_eq!(back, want, "{doc} -> {got}");
            assert_eq!(got, serde_pretty(doc), "{doc}");
        }
    }

    /// (Floats whose shortest digits serde_json would not parse back
    /// exactly are left out: transcoding may change their last digit, the
    /// byte-wise copy keeps the daemon's.)
    #[test]
    fn a_stats_sized_document_comes_out_as_serde_indents_it() {
        let tunnels: Vec<_> = (0..2000u32)
            .map(|i| {
                serde_json::json!({
                    "local_ccid": i, "remote_ip": format!("10.0.{}.{}", i / 256, i % 256),
                    "host_name": format!("ap-\"{i}\""), "up_secs": f64::from(i) / 4.0,
                    "sessions": [{"session_id": i, "vlan": null, "cookie": [1, 2]}],
                    "empty": [], "none": {},
                })
            })
            .collect();
        let line = serde_json::json!({"name": "edge", "tunnels": tunnels}).to_string();
        let (got, want) = (indented(&line), serde_pretty(&line));
        let at = got
            .bytes()
            .zip(want.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        assert_eq!(
            got.len(),
            want.len(),
            "they part at {at}: {}",
            &got[at.saturating_sub(80)..]
        );
        assert!(
            got == want,
            "they part at {at}: {}",
            &got[at.saturating_sub(80)..at + 80]
        );
        let back: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(&line).unwrap()
        );
    }

    #[test]
    fn broken_input_does_not_panic() {
        for doc in ["{", "[\"abc", "\"\\", "}}]]", "{\"a\":[1,", ",,::"] {
            let _ = indented(doc);
        }
    }
}
