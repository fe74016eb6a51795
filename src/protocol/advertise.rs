//! Ref and capability advertisements: what `GET info/refs?service=...` answers.
//!
//! Matches what `git http-backend` (git 2.47) sends, captured in the project's
//! reference notes: the smart-HTTP preamble (`# service=...` and a flush) before a v0
//! advertisement, none before the v2 capability list.

use bytes::Bytes;

use super::pktline::PktWriter;
use super::{Features, Service, agent};
use crate::repo::Manifest;

/// Capabilities of upload-pack in protocol v0/v1, in the order git lists them.
fn upload_pack_caps(manifest: Option<&Manifest>, features: &Features) -> String {
    let mut caps = String::from(
        "multi_ack thin-pack side-band side-band-64k ofs-delta shallow deepen-since \
         deepen-not deepen-relative no-progress include-tag multi_ack_detailed \
         allow-tip-sha1-in-want allow-reachable-sha1-in-want no-done",
    );
    if let Some(m) = manifest
        && m.head_id().is_some()
    {
        caps.push_str(&format!(" symref=HEAD:{}", m.head));
    }
    let format = manifest.map_or("sha1", |m| &m.object_format);
    caps.push_str(&format!(" filter object-format={format} agent={}", agent()));
    if let Some(sid) = features.session_id() {
        caps.push_str(&format!(" session-id={sid}"));
    }
    caps
}

/// Capabilities of receive-pack. `push-options` is always on (git's
/// `receive.advertisePushOptions`). A repository a push will create takes either object
/// format (the push fixes it), so both are listed, sha1 first.
fn receive_pack_caps(manifest: Option<&Manifest>, features: &Features) -> String {
    let formats = match manifest {
        Some(m) => format!("object-format={}", m.object_format),
        None => "object-format=sha1 object-format=sha256".to_owned(),
    };
    let mut caps = format!(
        "report-status report-status-v2 delete-refs side-band-64k quiet atomic ofs-delta \
         push-options {formats} agent={}",
        agent()
    );
    if let Some(sid) = features.session_id() {
        caps.push_str(&format!(" session-id={sid}"));
    }
    caps
}

/// The v0 advertisement of `service` for a repository in `manifest` (`None`: a
/// repository a push will create), with the smart-HTTP preamble when `preamble`, and
/// opened by `version 1` when `v1` (as git's upload-pack and receive-pack answer a v1
/// client).
pub fn v0(
    service: Service,
    manifest: Option<&Manifest>,
    preamble: bool,
    v1: bool,
    features: &Features,
) -> Bytes {
    let mut w = PktWriter::new();
    if preamble {
        w.line(format!("# service={}", service.name())).flush();
    }
    if v1 {
        w.line("version 1");
    }
    let caps = match service {
        Service::UploadPack => upload_pack_caps(manifest, features),
        Service::ReceivePack => receive_pack_caps(manifest, features),
    };
    let mut lines: Vec<String> = Vec::new();
    if let Some(m) = manifest {
        if service == Service::UploadPack
            && let Some(head) = m.head_id()
        {
            lines.push(format!("{head} HEAD"));
        }
        for (name, value) in &m.refs {
            lines.push(format!("{} {name}", value.id));
            if service == Service::UploadPack
                && let Some(peeled) = value.peeled
            {
                lines.push(format!("{peeled} {name}^{{}}"));
            }
        }
    }
    if lines.is_empty() {
        let format = manifest.map_or(gix_hash::Kind::Sha1, Manifest::object_hash);
        lines.push(format!("{} capabilities^{{}}", format.null()));
    }
    for (i, line) in lines.iter().enumerate() {
        if i == 0 {
            w.data(format!("{line}\0{caps}\n").as_bytes());
        } else {
            w.line(line);
        }
    }
    w.flush();
    w.finish()
}

/// The protocol v2 capability advertisement of upload-pack.
pub fn v2_capabilities(features: &Features, object_format: &str) -> Bytes {
    let mut w = PktWriter::new();
    let mut fetch = String::from("fetch=shallow wait-for-done filter");
    if features.ref_in_want {
        fetch.push_str(" ref-in-want");
    }
    let offload = features.offload.as_ref();
    if offload.is_some_and(|o| o.packfile_uris) {
        fetch.push_str(" packfile-uris");
    }
    w.line("version 2")
        .line(format!("agent={}", agent()))
        .line("ls-refs=unborn")
        .line(fetch)
        .line("server-option")
        .line(format!("object-format={object_format}"));
    if offload.is_some_and(|o| o.bundle_uri) {
        w.line("bundle-uri");
    }
    if let Some(sid) = features.session_id() {
        w.line(format!("session-id={sid}"));
    }
    w.flush();
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::manifest::RefValue;

    fn oid(hex: &str) -> gix_hash::ObjectId {
        gix_hash::ObjectId::from_hex(hex.as_bytes()).expect("hex")
    }

    #[test]
    fn upload_pack_v0_lists_head_refs_and_peeled_tags() {
        let mut m = Manifest::empty("refs/heads/main");
        let c = "67463eab6b939e3de1ed116192ded6d6788017e3";
        let t = "c2be8f33c8b6942409d3162ec847efb217dc0fdb";
        m.refs.insert(
            "refs/heads/main".into(),
            RefValue {
                id: oid(c),
                peeled: None,
            },
        );
        m.refs.insert(
            "refs/tags/v1".into(),
            RefValue {
                id: oid(t),
                peeled: Some(oid(c)),
            },
        );
        let adv = v0(
            Service::UploadPack,
            Some(&m),
            true,
            false,
            &Features::default(),
        );
        let text = String::from_utf8_lossy(&adv);
        assert!(
            text.starts_with("001e# service=git-upload-pack\n0000"),
            "{text}"
        );
        assert!(text.contains(&format!("{c} HEAD\0multi_ack thin-pack")));
        assert!(!text.contains("session-id"));
        assert!(text.contains("symref=HEAD:refs/heads/main"));
        assert!(text.contains(&format!("{c} refs/heads/main\n")));
        assert!(text.contains(&format!("{t} refs/tags/v1\n")));
        assert!(text.contains(&format!("{c} refs/tags/v1^{{}}\n")));
        assert!(text.ends_with("0000"));
    }

    #[test]
    fn empty_repositories_advertise_capabilities_only() {
        let features = Features {
            advertise_session_id: true,
            ..Features::default()
        };
        let adv = v0(Service::ReceivePack, None, true, false, &features);
        let text = String::from_utf8_lossy(&adv);
        assert!(
            text.contains(&format!(
                "{} capabilities^{{}}\0report-status",
                gix_hash::Kind::Sha1.null()
            )),
            "{text}"
        );
        assert!(text.contains(" session-id=stowage-"), "{text}");
    }
}
