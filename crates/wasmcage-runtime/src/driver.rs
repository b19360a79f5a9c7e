//! The built-in drivers: a few lines of the guest's own language that a pre-started
//! interpreter runs first. A driver reads each turn from stdin (`read exactly` loops, never
//! reading ahead, so that a read with nothing pending always means "the turn is over"; see
//! `wasmcage_core::Interactive`), runs the code, flushes, and then either exits with the
//! code's status (one-shot) or writes the status record and waits for the next cell
//! (session).
//!
//! A turn's input is a 24-byte header, the code's length and the stdin's length as two
//! 12-digit decimals, then the code, then the stdin. JavaScript gets the code as JSON text
//! in ASCII (QuickJS has no UTF-8 decoder to read raw bytes with).

use bytes::{BufMut, Bytes, BytesMut};

use crate::Driver;

/// The Python driver; `{SESSION}` is `True` or `False`.
const PYTHON: &str = r#"
import io, os, sys, traceback
def _wasmcage_driver(session):
    def readn(n):
        chunks = []
        while n > 0:
            b = os.read(0, n)
            if not b:
                return None
            chunks.append(b)
            n -= len(b)
        return b"".join(chunks)
    main = sys.modules["__main__"].__dict__
    main.pop("_wasmcage_driver", None)
    try:
        os.chdir("/workspace")
    except OSError:
        pass
    name = "<cell>" if session else "<string>"
    # Pay the first compile's and the first write's one-time costs now, in the start-up,
    # not in the first code's budget.
    exec(compile("pass", name, "exec"), {})
    io.TextIOWrapper(io.BytesIO(b""), encoding="utf-8").read()
    sys.stdout.write("")
    sys.stdout.flush()
    while True:
        head = readn(24)
        if head is None:
            return 0
        code = readn(int(head[:12])) or b""
        data = readn(int(head[12:])) or b""
        if session:
            sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
        status = 0
        try:
            exec(compile(code, name, "exec"), main)
        except SystemExit as e:
            if e.code is None:
                status = 0
            elif isinstance(e.code, int):
                status = e.code
            else:
                print(e.code, file=sys.stderr)
                status = 1
        except BaseException as e:
            traceback.print_exception(type(e), e, e.__traceback__.tb_next)
            status = 1
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        if not session:
            # The interpreter's finalisation costs more than most code: skip it.
            os._exit(status)
        os.write(1, b"\x1fwasmcage:status=%d\x1f" % status)
sys.exit(_wasmcage_driver({SESSION}))
"#;

/// The JavaScript (QuickJS-ng, `--std`) driver; `{SESSION}` is `true` or `false`.
const JAVASCRIPT: &str = r#"
(async () => {
  const session = {SESSION};
  const readn = (n) => {
    const buf = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const r = os.read(0, buf.buffer, at, n - at);
      if (r <= 0) return null;
      at += r;
    }
    return buf;
  };
  const ascii = (b) => {
    let s = "";
    for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode.apply(null, b.subarray(i, i + 8192));
    return s;
  };
  try { os.chdir("/workspace"); } catch (e) {}
  for (;;) {
    const head = readn(24);
    if (head === null) std.exit(0);
    const h = ascii(head);
    const code = JSON.parse(ascii(readn(parseInt(h.slice(0, 12), 10)) || new Uint8Array(0)));
    readn(parseInt(h.slice(12), 10));
    let status = 0;
    try {
      std.evalScript(code);
      for (let i = 0; i < 64; i++) await null;
    } catch (e) {
      std.err.puts(String(e) + "\n" + ((e && e.stack) ? e.stack : ""));
      status = 1;
    }
    std.out.flush();
    std.err.flush();
    if (!session) std.exit(status);
    std.out.puts("\x1fwasmcage:status=" + status + "\x1f");
    std.out.flush();
  }
})();
"#;

impl Driver {
    /// The driver's source for one-shot or session use: what goes in place of `{code}` in
    /// the runtime's `argv_code`.
    pub fn source(self, session: bool) -> String {
        match self {
            Driver::Python => PYTHON.replace("{SESSION}", if session { "True" } else { "False" }),
            Driver::JavaScript => {
                JAVASCRIPT.replace("{SESSION}", if session { "true" } else { "false" })
            }
        }
    }

    /// One turn's input: the header, the code and the stdin.
    pub fn encode(self, code: &str, stdin: &[u8]) -> Bytes {
        let code: Vec<u8> = match self {
            Driver::Python => code.as_bytes().to_vec(),
            Driver::JavaScript => ascii_json(code).into_bytes(),
        };
        let mut out = BytesMut::with_capacity(24 + code.len() + stdin.len());
        out.put_slice(format!("{:012}{:012}", code.len(), stdin.len()).as_bytes());
        out.put_slice(&code);
        out.put_slice(stdin);
        out.freeze()
    }

    /// Whether the driver hands a session cell its stdin (Python's `sys.stdin`); the
    /// JavaScript driver has no stdin for cells.
    pub fn cell_stdin(self) -> bool {
        matches!(self, Driver::Python)
    }
}

/// `text` as a JSON string in ASCII: everything outside printable ASCII escaped.
fn ascii_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    let mut units = [0u16; 2];
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => {
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn javascript_code_travels_as_ascii_json() {
        let text = "console.log(\"héllo 🦀\\n\")\n";
        let json = ascii_json(text);
        assert!(json.is_ascii());
        let back: String = serde_json::from_str(&json).unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn the_header_gives_both_lengths() {
        let turn = Driver::Python.encode("print(1)", b"in");
        assert_eq!(&turn[..24], b"000000000008000000000002");
        assert_eq!(&turn[24..], b"print(1)in");
    }
}
