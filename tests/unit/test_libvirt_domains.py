"""The libvirt provider's pure parts: domain XML read and written, grouping, the marker."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from backup_jobs.providers.libvirt_domains import (
    DEFAULT_GROUP,
    BackupMeta,
    DomainDisk,
    backup_xml,
    checkpoint_xml,
    dirty_bitmap,
    group_of,
    installed,
    meta_xml,
    new_domain_xml,
    parse_domain,
    parse_meta,
)

DOMAIN = """<domain type='kvm'><name>web.db1</name><memory unit='KiB'>262144</memory>
<vcpu>2</vcpu><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
  <source file='/img/db1.qcow2'/><target dev='vda' bus='virtio'/></disk>
<disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda'/></disk>
<disk type='block' device='disk'><driver name='qemu' type='raw'/>
  <source dev='/dev/vg/db1-data'/><target dev='vdb' bus='virtio'/></disk>
<interface type='network'/><interface type='network'/>
<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
</channel></devices></domain>"""


def test_a_domain_s_disks_skip_cdroms_and_keep_target_path_and_format() -> None:
    view = parse_domain(DOMAIN)

    assert view.disks == (
        DomainDisk("vda", "/img/db1.qcow2", "qcow2"),
        DomainDisk("vdb", "/dev/vg/db1-data", "raw"),
    )
    assert (view.nics, view.agent_channel, view.agent_connected) == (2, True, True)
    assert (view.memory_kib, view.vcpus) == (262144, 2)


def test_a_domain_without_the_agent_channel_has_no_agent() -> None:
    view = parse_domain("<domain><name>a</name><devices/></domain>")

    assert not view.agent_channel and not view.agent_connected and view.disks == ()


@pytest.mark.parametrize(
    ("name", "meta", "group"),
    [
        ("web.db1", BackupMeta(), "web"),
        ("web.db1", BackupMeta(cloud_service="billing"), "billing"),
        ("db1", BackupMeta(), DEFAULT_GROUP),
        (".hidden", BackupMeta(), DEFAULT_GROUP),
    ],
)
def test_the_cloud_service_is_the_metadata_s_else_the_name_prefix_else_the_default(
    name: str, meta: BackupMeta, group: str
) -> None:
    assert group_of(name, meta) == group


def test_the_registration_marker_round_trips_through_the_metadata_element() -> None:
    meta = installed(BackupMeta("web", "r1", "Linux"), "7.2.22", "vault-a", 7)

    again = parse_meta(meta_xml(meta))

    assert again.cloud_service == "web" and again.region == "r1"
    assert again.extension is not None and again.extension.agent_version == "7.2.22"
    assert again.extension.tokens == {"vault-a": 7}
    assert installed(again, None, "vault-b", 2).extension.tokens == {"vault-a": 7, "vault-b": 2}


@pytest.mark.parametrize("text", [None, "", "<not xml", "<vm/>"])
def test_missing_or_unreadable_metadata_is_empty(text: str | None) -> None:
    assert parse_meta(text) == BackupMeta()


def test_an_incremental_pull_backup_exports_every_disk_with_a_scratch_file() -> None:
    disks = [DomainDisk("vda", "/a", "qcow2"), DomainDisk("vdb", "/b", "raw")]

    root = ET.fromstring(backup_xml("/run/x/nbd.sock", "/run/x", disks, "bj-1"))

    assert root.get("mode") == "pull" and root.findtext("incremental") == "bj-1"
    assert root.find("server").get("socket") == "/run/x/nbd.sock"
    assert [d.find("scratch").get("file") for d in root.iterfind("disks/disk")] == [
        "/run/x/scratch-vda.qcow2",
        "/run/x/scratch-vdb.qcow2",
    ]
    assert ET.fromstring(backup_xml("/s", "/d", disks, None)).find("incremental") is None


def test_a_checkpoint_puts_a_bitmap_on_each_disk_given() -> None:
    root = ET.fromstring(checkpoint_xml("bj-2", [DomainDisk("vda", "/a", "qcow2")]))

    assert root.findtext("name") == "bj-2"
    assert [(d.get("name"), d.get("checkpoint")) for d in root.iterfind("disks/disk")] == [
        ("vda", "bitmap")
    ]


def test_the_dirty_bitmap_of_a_disk_is_read_from_the_running_backup() -> None:
    running = (
        "<domainbackup mode='pull'><disks><disk name='vda' exportbitmap='backup-vda'/>"
        "<disk name='vdb'/></disks></domainbackup>"
    )

    assert dirty_bitmap(running, "vda") == "backup-vda"
    assert dirty_bitmap(running, "vdb") is None


def test_a_restored_domain_boots_from_its_first_disk_and_has_an_agent_channel() -> None:
    xml = new_domain_xml("a<b", [DomainDisk("vda", "/i/vda.qcow2", "qcow2")], 524288, 1)

    view = parse_domain(xml)
    assert view.name == "a<b" and view.agent_channel
    assert view.disks == (DomainDisk("vda", "/i/vda.qcow2", "qcow2"),)
