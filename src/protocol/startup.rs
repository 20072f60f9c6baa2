//! The untagged packets a client may open with: SSLRequest, GSSENCRequest,
//! CancelRequest and StartupMessage. Parsed with nom from a body whose length
//! the caller has already bounded (`MAX_STARTUP_PACKET`). Pure: no I/O here.

use nom::number::complete::{be_i32, be_u32};
use nom::Parser;

use super::body::cstring;
use super::{CANCEL_REQUEST, GSSENC_REQUEST, SSL_REQUEST};

/// What a client's first packet asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    CancelRequest {
        pid: i32,
        secret: i32,
    },
    Startup {
        major: u16,
        minor: u16,
        /// Parameters in the order sent (`user`, `database`, `options`, GUCs, `_pq_.` options).
        params: Vec<(String, String)>,
    },
}

/// Why a startup packet was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupError {
    Malformed,
    UnsupportedProtocol(u32),
}

/// Parses a startup packet body: everything after the 4-byte length.
pub fn parse_startup(body: &[u8]) -> Result<StartupPacket, StartupError> {
    let Ok((rest, code)) = be_u32::<_, nom::error::Error<&[u8]>>(body) else {
        return Err(StartupError::Malformed);
    };
    match code {
        SSL_REQUEST if rest.is_empty() => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST if rest.is_empty() => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => match (be_i32::<_, nom::error::Error<&[u8]>>, be_i32).parse(rest) {
            Ok((&[], (pid, secret))) => Ok(StartupPacket::CancelRequest { pid, secret }),
            _ => Err(StartupError::Malformed),
        },
        SSL_REQUEST | GSSENC_REQUEST => Err(StartupError::Malformed),
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(StartupError::UnsupportedProtocol(code));
            }
            let params = parse_params(rest).map_err(|_| StartupError::Malformed)?;
            Ok(StartupPacket::Startup {
                major,
                minor,
                params,
            })
        }
    }
}

fn parse_params(mut input: &[u8]) -> Result<Vec<(String, String)>, ()> {
    let mut params = Vec::new();
    loop {
        let (rest, name) = cstring(input).map_err(|_| ())?;
        if name.is_empty() {
            // The terminating empty name must end the packet.
            return if rest.is_empty() { Ok(params) } else { Err(()) };
        }
        let (rest, value) = cstring(rest).map_err(|_| ())?;
        let name = std::str::from_utf8(name).map_err(|_| ())?;
        let value = String::from_utf8_lossy(value).into_owned();
        params.push((name.to_string(), value));
        input = rest;
    }
}

/// Splits a startup `options` value into `name=value` settings: `-c name=value`,
/// `-cname=value` and `--name=value` are understood, `\` escapes the next character.
/// Other switches are returned as errors (PgGate cannot replay them with SET).
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()
                .ok_or_else(|| "option -c needs name=value".to_string())?
        } else if let Some(s) = w.strip_prefix("--") {
            s.to_string()
        } else if let Some(s) = w.strip_prefix("-c") {
            s.to_string()
        } else {
            return Err(format!("unsupported startup option \"{w}\""));
        };
        match setting.split_once('=') {
            Some((n, v)) if !n.is_empty() => out.push((n.replace('-', "_"), v.to_string())),
            _ => return Err(format!("invalid startup option \"{setting}\"")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup_body(params: &[(&str, &str)], version: u32) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        for (k, v) in params {
            b.extend_from_slice(k.as_bytes());
            b.push(0);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        b
    }

    #[test]
    fn ssl_gss_and_cancel_requests() {
        assert_eq!(
            parse_startup(&SSL_REQUEST.to_be_bytes()),
            Ok(StartupPacket::SslRequest)
        );
        assert_eq!(
            parse_startup(&GSSENC_REQUEST.to_be_bytes()),
            Ok(StartupPacket::GssEncRequest)
        );
        let mut c = CANCEL_REQUEST.to_be_bytes().to_vec();
        c.extend_from_slice(&5i32.to_be_bytes());
        c.extend_from_slice(&(-6i32).to_be_bytes());
        assert_eq!(
            parse_startup(&c),
            Ok(StartupPacket::CancelRequest { pid: 5, secret: -6 })
        );
        assert_eq!(parse_startup(&c[..10]), Err(StartupError::Malformed));
    }

    #[test]
    fn startup_message_params_in_order() {
        let b = startup_body(&[("user", "u"), ("database", "d")], 196_608);
        assert_eq!(
            parse_startup(&b),
            Ok(StartupPacket::Startup {
                major: 3,
                minor: 0,
                params: vec![("user".into(), "u".into()), ("database".into(), "d".into())]
            })
        );
    }

    #[test]
    fn newer_minor_versions_parse_other_majors_refused() {
        let b = startup_body(&[("user", "u")], 196_610);
        assert!(matches!(
            parse_startup(&b),
            Ok(StartupPacket::Startup { minor: 2, .. })
        ));
        let b = startup_body(&[("user", "u")], 131_072);
        assert_eq!(
            parse_startup(&b),
            Err(StartupError::UnsupportedProtocol(131_072))
        );
    }

    #[test]
    fn malformed_startup_packets() {
        assert_eq!(parse_startup(b""), Err(StartupError::Malformed));
        assert_eq!(parse_startup(b"\0\x03"), Err(StartupError::Malformed));
        let mut b = startup_body(&[("user", "u")], 196_608);
        b.pop();
        assert_eq!(parse_startup(&b), Err(StartupError::Malformed));
        let mut b = startup_body(&[("user", "u")], 196_608);
        b.push(b'x');
        assert_eq!(parse_startup(&b), Err(StartupError::Malformed));
        let mut bad = 196_608u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"user\0");
        assert_eq!(parse_startup(&bad), Err(StartupError::Malformed));
    }

    #[test]
    fn options_are_split_into_settings() {
        assert_eq!(
            parse_options("-c search_path=a,b  --work-mem=4MB -cgeqo=off").unwrap(),
            vec![
                ("search_path".into(), "a,b".into()),
                ("work_mem".into(), "4MB".into()),
                ("geqo".into(), "off".into())
            ]
        );
        assert_eq!(
            parse_options(r"-c application_name=a\ b").unwrap(),
            vec![("application_name".into(), "a b".into())]
        );
        assert!(parse_options("-d 5").is_err());
        assert!(parse_options("-c").is_err());
        assert_eq!(parse_options("").unwrap(), vec![]);
    }
}
