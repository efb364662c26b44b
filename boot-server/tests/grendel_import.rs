//! `bootd import-grendel` of Grendel's real files (`tests/fixtures/grendel/`,
//! cut from upstream's and the SquareFactory fork's docs and tests, and
//! the ClusterFactory seed as its Helm chart hands it over): each imports,
//! the result goes through the real inventory parser, and its hosts'
//! iPXE scripts show the command line rendered as Grendel renders it.
use nodeboot_boot_server::inventory::{import_grendel_files, ipxe_script, Inventory};
use std::path::{Path, PathBuf};
use std::process::Command;

const BASE: &str = "http://10.0.0.1:8080";
const TOKEN: &str = "nodeboot.token=abc123";

fn fx(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/grendel")
        .join(name)
}

/// Import these fixtures (or `(name, json)` given inline) through the
/// library, and load the result through the inventory parser.
fn import_with(files: &[&str], inline: &[(&str, &str)]) -> (String, Vec<String>, Inventory) {
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.to_string(), std::fs::read_to_string(fx(f)).unwrap()))
        .collect();
    let mut named: Vec<(&str, &str)> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    named.extend_from_slice(inline);
    let (text, notes) = import_grendel_files(&named).unwrap();
    let inv = Inventory::parse(&text, "imported.toml").unwrap();
    (text, notes, inv)
}

fn import(files: &[&str]) -> (String, Vec<String>, Inventory) {
    import_with(files, &[])
}

/// The `kernel …` line of the iPXE script for `mac`.
fn kernel_line(inv: &Inventory, mac: &str) -> String {
    let s = ipxe_script(inv, mac, BASE, TOKEN).unwrap().unwrap();
    s.lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap_or_else(|| panic!("no kernel line: {s}"))
        .to_string()
}

fn has_note(notes: &[String], want: &str) {
    assert!(
        notes.iter().any(|n| n == want),
        "no note {want:?} in {notes:#?}"
    );
}

/// A host of ours booting `image` on MAC `AA:BB:CC:00:00:01` (uppercase,
/// as Grendel's docs write them).
fn host_json(image: &str) -> String {
    format!(
        r#"[{{"name": "cn1", "provision": true, "boot_image": "{image}",
            "interfaces": [{{"mac": "AA:BB:CC:00:00:01", "ip": "10.0.0.5/24", "fqdn": "cn1.cluster.local"}}]}}]"#
    )
}

#[test]
fn quickstart_uppercase_mac_and_old_placeholders() {
    let (text, notes, inv) = import(&[
        "ubccr-grendel--quickstart-hosts.json",
        "ubccr-grendel--quickstart-image-ubuntu-focal-live.json",
    ]);
    assert_eq!(
        text,
        r#"[[image]]
name = "ubuntu-focal-live"
kernel = "ubuntu-focal-vmlinuz"
initrd = ["ubuntu-focal-initramfs.img"]
liveimg = "ubuntu-focal-squashfs.img"
cmdline = "root=live:$liveimg BOOTIF=$mac rd.neednet=1 ip=dhcp"

[[host]]
name = "cpn-d13-18"
image = "ubuntu-focal-live"
provision = true
tags = []

[[host.interfaces]]
mac = "41:69:ae:e6:61:06"
ip = "10.64.25.36/24"
bmc = false
fqdn = "cpn-d13-18.compute.ccr.buffalo.edu"
"#
    );
    let h = &inv.hosts[0];
    assert_eq!(h.interfaces[0].mac.as_deref(), Some("41:69:ae:e6:61:06"));
    // Grendel passes the old placeholders literally since 2022; so does bootd.
    assert_eq!(
        kernel_line(&inv, "41:69:AE:E6:61:06"),
        "kernel http://10.0.0.1:8080/ubuntu-focal-vmlinuz initrd=ubuntu-focal-initramfs.img \
         root=live:$liveimg BOOTIF=$mac rd.neednet=1 ip=dhcp nodeboot.token=abc123"
    );
    has_note(
        &notes,
        "image ubuntu-focal-live: cmdline has $mac, an old Grendel placeholder that Grendel \
         (since 2022) and bootd pass literally: write {{ $.nic.MAC }}",
    );
    has_note(
        &notes,
        "image ubuntu-focal-live: cmdline has $liveimg, an old Grendel placeholder that Grendel \
         (since 2022) and bootd pass literally: write {{ $.endpoints.LiveImageURL }}",
    );
    assert_eq!(notes.len(), 2, "{notes:#?}");
}

#[test]
fn readme_tux01_with_flatcar() {
    let (_, notes, inv) = import(&[
        "ubccr-grendel--readme-hosts-tux01.json",
        "ubccr-grendel--quickstart-image-flatcar.json",
    ]);
    assert!(notes.is_empty(), "{notes:#?}");
    let (h, nic) = inv.by_mac("de:ad:be:ef:12:8c").unwrap();
    assert_eq!(h.name, "tux01");
    assert_eq!(h.image.as_deref(), Some("flatcar"));
    assert_eq!(nic.ip.as_deref(), Some("192.168.10.12/24"));
    assert_eq!(nic.fqdn.as_deref(), Some("tux01.localhost"));
    assert_eq!(
        kernel_line(&inv, "DE:AD:BE:EF:12:8C"),
        "kernel http://10.0.0.1:8080/flatcar_production_pxe.vmlinuz \
         initrd=flatcar_production_pxe_image.cpio.gz flatcar.autologin nodeboot.token=abc123"
    );
}

#[test]
fn https_hosts_one_without_mac_or_image_and_verify() {
    let (_, notes, inv) = import(&[
        "ubccr-grendel--https-image-flatcar-verify.json",
        "ubccr-grendel--https-hosts.json",
    ]);
    assert_eq!(inv.hosts.len(), 2);
    let g = &inv.hosts[1];
    assert_eq!(g.name, "grendel");
    assert!(!g.provision);
    assert_eq!(g.image, None);
    assert_eq!(g.interfaces[0].mac, None);
    assert_eq!(g.interfaces[0].ip.as_deref(), Some("192.168.10.254/24"));
    assert_eq!(inv.by_mac("de:ad:be:ef:12:8c").unwrap().0.name, "tux01");
    assert_eq!(
        kernel_line(&inv, "de-ad-be-ef-12-8c"),
        "kernel http://10.0.0.1:8080/flatcar_production_pxe.vmlinuz \
         initrd=flatcar_production_pxe_image.cpio.gz flatcar.autologin nodeboot.token=abc123"
    );
    has_note(
        &notes,
        "image flatcar: verify = true left out: bootd's iPXE scripts check no signatures \
         (for signed boots: the docs' Secure Boot page, shim and GRUB)",
    );
    assert_eq!(notes.len(), 1, "{notes:#?}");
}

#[test]
fn kslive_upstream_endpoints() {
    // The image file alone makes an inventory of its own.
    let (_, notes, inv) = import(&["ubccr-grendel--kslive-image-centos7.json"]);
    assert_eq!(inv.images[0].name, "centos7");
    assert_eq!(inv.images[0].kernel, "vmlinuz");
    assert_eq!(
        inv.images[0].liveimg.as_deref(),
        Some("compute-node.squashfs")
    );
    assert!(inv.hosts.is_empty());
    has_note(
        &notes,
        "image centos7: cmdline uses $.endpoints.KickstartURL, which bootd does not serve \
         (it renders Grendel's BASE/boot/TOKEN/… URL)",
    );
    has_note(
        &notes,
        "/repo/centos/7.7.1908/os/x86_64/images/pxeboot/vmlinuz → vmlinuz: copy it into the served root",
    );
    let hosts = host_json("centos7");
    let (_, _, inv) = import_with(
        &["ubccr-grendel--kslive-image-centos7.json"],
        &[("hosts.json", &hosts)],
    );
    assert_eq!(
        kernel_line(&inv, "aa:bb:cc:00:00:01"),
        "kernel http://10.0.0.1:8080/vmlinuz initrd=initrd.img \
         ks=http://10.0.0.1:8080/boot/abc123/kickstart network ksdevice=bootif ks.device=bootif \
         inst.stage2=http://10.0.0.1:8080/repo/centos/7.7.1908/os/x86_64 nodeboot.token=abc123"
    );
}

#[test]
fn kslive_fork_missing_keys_are_no_value() {
    let hosts = host_json("centos7");
    let (_, _, inv) = import_with(
        &["squarefactory-grendel--kslive-image-centos7.json"],
        &[("hosts.json", &hosts)],
    );
    assert_eq!(
        kernel_line(&inv, "aa:bb:cc:00:00:01"),
        "kernel http://10.0.0.1:8080/vmlinuz initrd=initrd.img \
         ks=<no value> network ksdevice=bootif ks.device=bootif \
         inst.stage2=<no value>/centos/7.7.1908/os/x86_64 nodeboot.token=abc123"
    );
}

#[test]
fn production_host_single_object_bmc_without_mac() {
    let (text, notes, inv) = import(&["ubccr-grendel--production-host-cpn-d13-08.json"]);
    assert!(text.contains("[[host.interfaces]]\nip = \"10.129.24.8/24\"\nbmc = true\nfqdn = \"bmc-d13-08.compute.ccr.buffalo.edu\"\n"), "{text}");
    let h = &inv.hosts[0];
    assert_eq!(h.name, "cpn-d13-08");
    assert!(h.provision);
    assert_eq!(h.image, None);
    assert_eq!(h.interfaces.len(), 2);
    assert!(h.interfaces[0].bmc && h.interfaces[0].mac.is_none());
    assert_eq!(h.interfaces[1].ip.as_deref(), Some("10.65.24.8/24"));
    assert!(!h.interfaces[1].bmc);
    has_note(
        &notes,
        "host cpn-d13-08: provision = true without an image: it gets no boot config until it has one",
    );
}

#[test]
fn tests_factory_host_with_bonds() {
    let (_, notes, inv) = import(&["ubccr-grendel--tests-factory-TestHostJSON.json"]);
    let (h, nic) = inv.by_mac("d0:93:ae:e1:b5:2e").unwrap();
    assert_eq!(h.name, "tux01");
    assert_eq!(h.firmware, None); // "firmware": ""
    assert_eq!(nic.ip.as_deref(), Some("10.10.1.2/24"));
    assert_eq!(nic.fqdn.as_deref(), Some("tux01.compute.local"));
    assert_eq!(nic.ifname, None); // "ifname": ""
    assert_eq!(h.image, None);
    has_note(
        &notes,
        "host tux01: bond bond0 (10.11.1.2/24, peers d0:93:ae:e1:b5:2e d0:93:ae:e1:b5:2f) \
         left out: the inventory has no bonds ($.host.Bonds is empty)",
    );
    has_note(
        &notes,
        "host tux01: boot_image \"centos6\" left out: no image of that name was imported \
         (import its JSON too, or set image = in the inventory)",
    );
    // The fork's variant: `id` a ksuid, no bonds.
    let (_, notes, inv) = import(&["squarefactory-grendel--tests-factory-TestHostJSON.json"]);
    assert_eq!(inv.by_mac("d0:93:ae:e1:b5:2e").unwrap().0.name, "tux01");
    assert!(!notes.iter().any(|n| n.contains("bond")), "{notes:#?}");
}

#[test]
fn tests_factory_image_single_object() {
    let (_, notes, inv) = import(&["ubccr-grendel--tests-factory-TestBootImageJSON.json"]);
    let im = &inv.images[0];
    assert_eq!(im.name, "compute");
    assert_eq!(im.kernel, "vmlinuz");
    assert_eq!(im.initrd, ["ccr-initrd.img"]);
    assert_eq!(im.liveimg.as_deref(), Some("compute-node-squashfs.img"));
    for old in ["$mac", "$kickstart", "$repo"] {
        assert!(
            notes
                .iter()
                .any(|n| n.contains(&format!("cmdline has {old},"))),
            "{old}: {notes:#?}"
        );
    }
    let hosts = host_json("compute");
    let (_, _, inv) = import_with(
        &["ubccr-grendel--tests-factory-TestBootImageJSON.json"],
        &[("hosts.json", &hosts)],
    );
    assert_eq!(
        kernel_line(&inv, "aa:bb:cc:00:00:01"),
        "kernel http://10.0.0.1:8080/vmlinuz initrd=ccr-initrd.img console=tty0 console=ttyS0 \
         BOOTIF=$mac rd.neednet=1 ip=dhcp ks=$kickstart network ksdevice=bootif ks.device=bootif \
         inst.stage2=$repo/centos7 nodeboot.token=abc123"
    );
}

#[test]
fn seed_as_helm_hands_it_over() {
    let (_, notes, inv) = import(&[
        "clusterfactory--seed-hosts.helm.json",
        "clusterfactory--seed-images.helm.json",
    ]);
    let (h, _) = inv.by_mac("aa:bb:cc:11:22:33").unwrap();
    assert_eq!(
        h.firmware.map(|f| (f.name, f.file)),
        Some(("snponly-x86_64.efi", "snponly.efi"))
    );
    assert_eq!(h.interfaces[1].ip.as_deref(), Some("192.168.1.51/32"));
    assert_eq!(notes.len(), 2, "{notes:#?}"); // the kernel's and initrd's paths
    assert_eq!(
        kernel_line(&inv, "AA:BB:CC:11:22:33"),
        "kernel http://10.0.0.1:8080/vmlinuz-5.14.0-284.30.1.el9_2.x86_64 \
         initrd=initramfs-5.14.0-284.30.1.el9_2.x86_64.img console=ttyS0 console=tty0 \
         root=live:https://sos-ch-dk-2.exo.io/osimages/squareos-9.2/squareos-9.2.squashfs \
         BOOTIF=01-aa-bb-cc-11-22-33 grendel.hostname=cn1 grendel.address=http://grendel.example.com \
         rd.live.overlay.readonly=1 rd.live.overlay.overlayfs=1 rd.neednet=1 nodeboot.token=abc123"
    );
}

/// The seed's template, and upstream's built-ins-only one, on a host whose
/// JSON has an uppercase MAC: Go prints `net.HardwareAddr` lowercase.
#[test]
fn grendel_data_in_templates() {
    let image = |cmdline: &str| {
        serde_json::json!({"name": "t", "kernel": "vmlinuz", "liveimg": "live.squashfs", "cmdline": cmdline})
            .to_string()
    };
    let cases: &[(&str, &str)] = &[
        (
            r#"BOOTIF=01-{{ $.nic.MAC | toString | replace ":" "-" }}"#,
            "BOOTIF=01-41-69-ae-e6-61-06",
        ),
        ("BOOTIF={{ $.nic.MAC }}", "BOOTIF=41:69:ae:e6:61:06"),
        (
            "ip={{ $.nic.AddrString }}::{{ $.nic.Gateway }}:{{ $.nic.NetmaskString }}:{{ $.nic.ShortName }} cidr={{ $.nic.CIDR }} {{ $.nic.IP }}",
            "ip=10.64.25.36::invalid IP:255.255.255.0:cpn-d13-18 cidr=10.64.25.36/24 10.64.25.36/24",
        ),
        (
            "{{ $.nic.FQDN }} {{ $.nic.Domain }} {{ $.nic.InterfaceMTU }} {{ $.host.Name }} {{ $.host.BootImage }} {{ $.bootimage.Name }}",
            "cpn-d13-18.compute.ccr.buffalo.edu compute.ccr.buffalo.edu 1500 cpn-d13-18 t t",
        ),
        (
            "k={{ $.endpoints.KernelURL }} l={{ $.endpoints.LiveImageURL }} r={{ $.endpoints.RepoURL }} t={{ $.token }}",
            "k=http://10.0.0.1:8080/vmlinuz l=http://10.0.0.1:8080/live.squashfs r=http://10.0.0.1:8080/repo t=abc123",
        ),
        ("ks={{ $.kickstart }} {{ $.headers.Accept }}", "ks=<no value> <no value>"),
        (
            r#"{{ $.host.Name | upper | trimSuffix "-18" }} {{ $.rootpw | default "none" }} {{ join "," $.host.Tags | quote }}"#,
            r#"CPN-D13 none """#,
        ),
    ];
    for (tmpl, want) in cases {
        let images = image(tmpl);
        let (_, _, inv) = import_with(
            &["ubccr-grendel--quickstart-hosts.json"],
            &[("image.json", &images)],
        );
        // The host names boot_image ubuntu-focal-live: point it at `t`.
        let mut inv = inv;
        inv.hosts[0].image = Some("t".into());
        let line = kernel_line(&inv, "41:69:ae:e6:61:06");
        assert_eq!(
            line,
            format!("kernel http://10.0.0.1:8080/vmlinuz {want} nodeboot.token=abc123"),
            "{tmpl}"
        );
    }
    // A struct's missing field is an error, as in Go (`$.nic.mac`): the
    // inventory is refused, naming the host.
    let images = image("BOOTIF={{ $.nic.mac }}");
    let hosts = host_json("t");
    let e = import_grendel_files(&[("hosts.json", &hosts), ("image.json", &images)]).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        "Grendel's data does not make a valid inventory: the converted inventory:6: \
         image[0].cmdline: cannot render for host cn1: can't evaluate field mac (names are \
         case-sensitive; the fields: AddrString BMC CIDR DNS DNSList Domain DomainSearch FQDN \
         Gateway HostName ID IP InterfaceMTU MAC MTU Name NetmaskString ShortName VLAN)"
    );
}

/// `$.endpoints.InitrdURL N`, a Go method with an argument, in each way a
/// template can call it.
#[test]
fn initrd_url_with_an_argument() {
    let images = serde_json::json!({
        "name": "t", "kernel": "vmlinuz", "initrd": ["/var/lib/grendel/initrd.img", "extra.img"],
        "cmdline": "a={{ $.endpoints.InitrdURL 1 }} b={{ 0 | $.endpoints.InitrdURL }} \
                    c={{ range $i, $p := $.bootimage.InitrdPaths }}{{ $.endpoints.InitrdURL $i }},{{ end }} \
                    d={{ (printf \"%s\" ($.endpoints.InitrdURL 1)) }} e={{ \"$.endpoints.InitrdURL 1\" }}"
    })
    .to_string();
    let hosts = host_json("t");
    let (_, _, inv) = import_with(&[], &[("hosts.json", &hosts), ("images.json", &images)]);
    assert_eq!(
        kernel_line(&inv, "aa:bb:cc:00:00:01"),
        "kernel http://10.0.0.1:8080/vmlinuz initrd=initrd.img initrd=extra.img \
         a=http://10.0.0.1:8080/extra.img b=http://10.0.0.1:8080/initrd.img \
         c=http://10.0.0.1:8080/initrd.img,http://10.0.0.1:8080/extra.img, \
         d=http://10.0.0.1:8080/extra.img e=$.endpoints.InitrdURL 1 nodeboot.token=abc123"
    );
}

/// Every valid file imports on its own, and the invalid one does not.
#[test]
fn every_file_alone() {
    let dir = fx("");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".json") {
            continue;
        }
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        let r = import_grendel_files(&[(&name, &text)]);
        if name.contains("trailing-comma") {
            assert!(r.is_err(), "{name}");
        } else {
            let (toml, _) = r.unwrap_or_else(|e| panic!("{name}: {e:#}"));
            Inventory::parse(&toml, &name).unwrap();
            n += 1;
        }
    }
    assert_eq!(n, 14);
}

fn bootd(args: &[&Path]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bootd"))
        .arg("import-grendel")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_trailing_comma_names_line_and_column() {
    let bad = fx("squarefactory-grendel--production-host-cpn-d13-08.trailing-comma.json");
    let o = bootd(&[&bad]);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "bootd: error: {}:16:1: not valid JSON: trailing comma (Grendel's encoding/json refuses it too)\n",
            bad.display()
        )
    );
}

#[test]
fn cli_files_in_any_order() {
    let hosts = fx("clusterfactory--seed-hosts.helm.json");
    let images = fx("clusterfactory--seed-images.helm.json");
    let a = bootd(&[&hosts, &images]);
    let b = bootd(&[&images, &hosts]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8(a.stdout).unwrap();
    let inv = Inventory::parse(&text, "stdout").unwrap();
    assert_eq!(inv.hosts[0].image.as_deref(), Some("squareos-9.2"));
    // Hosts alone: the image they name is left out, and said.
    let o = bootd(&[&hosts]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(
        "bootd: host cn1: boot_image \"squareos-9.2\" left out: no image of that name was imported"
    ));
}
