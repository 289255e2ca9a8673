# tests/test_ovf_foreign.py - OVF packages other tools wrote: a descriptor
# in the style VirtualBox writes and one in the style of VMware's ovftool,
# packed with their disks, import as VMs with their disks, controllers and
# NICs (tests/test_ovf.py has netstore's own export and import).
"""OVF packages written by VirtualBox and ovftool, imported."""

from __future__ import annotations

import hashlib
import io
import tarfile
import warnings
from pathlib import Path

import pytest

from netstore.disk.images import convert
from netstore.ovf import import_appliance
from netstore.registry import MachineRuleError, Registry
from tests.test_ovf import MiB, _refused, qemu_img, write


@pytest.fixture
def reg(tmp_path: Path):  # type: ignore[no-untyped-def]
    r = Registry.open(tmp_path / "state")
    yield r
    r.close()


def _package(tmp_path: Path, name: str, descriptor: str, files: dict[str, Path]) -> Path:
    ova = tmp_path / name
    digests = []
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as t:
        data = descriptor.encode()
        info = tarfile.TarInfo(name.replace(".ova", ".ovf"))
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
        digests.append((info.name, hashlib.sha256(data).hexdigest()))
        for member, path in files.items():
            t.add(str(path), arcname=member)
            digests.append((member, hashlib.sha256(path.read_bytes()).hexdigest()))
        mf = "".join(f"SHA256 ({n}) = {h}\n" for n, h in digests).encode()
        info = tarfile.TarInfo(name.replace(".ova", ".mf"))
        info.size = len(mf)
        t.addfile(info, io.BytesIO(mf))
    return ova


VBOX_OVF = """<?xml version="1.0"?>
<Envelope ovf:version="2.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/2"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/2"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <References>
    <File ovf:id="file1" ovf:href="Ubuntu VM-disk001.vmdk"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="33554432" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" vbox:uuid="6b1b0a8a-1f0f-4d6f-a2f5-5ae1b7f8a3c1"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT"><Description>Logical network used by this appliance.</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="Ubuntu VM">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="94">
      <Info>The kind of installed guest operating system</Info>
      <Description>Ubuntu_64</Description>
      <vbox:OSType ovf:required="false">Ubuntu_64</vbox:OSType>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>Ubuntu VM</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:Caption>2 virtual CPU</rasd:Caption>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:Caption>2048 MB of memory</rasd:Caption>
        <rasd:ElementName>2048 MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>ideController0</rasd:Caption>
        <rasd:ElementName>ideController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>PIIX4</rasd:ResourceSubType>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>sataController0</rasd:Caption>
        <rasd:ElementName>sataController0</rasd:ElementName>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:ResourceSubType>AHCI</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Caption>usb</rasd:Caption>
        <rasd:ElementName>usb</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceType>23</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>3</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:Caption>sound</rasd:Caption>
        <rasd:ElementName>sound</rasd:ElementName>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceSubType>ensoniq1371</rasd:ResourceSubType>
        <rasd:ResourceType>35</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:Caption>disk1</rasd:Caption>
        <rasd:ElementName>disk1</rasd:ElementName>
        <rasd:HostResource>/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>7</rasd:InstanceID>
        <rasd:Parent>4</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>3</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:Caption>cdrom1</rasd:Caption>
        <rasd:ElementName>cdrom1</rasd:ElementName>
        <rasd:InstanceID>8</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>15</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Caption>Ethernet adapter on 'NAT'</rasd:Caption>
        <rasd:Connection>NAT</rasd:Connection>
        <rasd:ElementName>Ethernet adapter on 'NAT'</rasd:ElementName>
        <rasd:InstanceID>9</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
    <vbox:Machine ovf:required="false" version="1.16-linux" uuid="{0b5a5e7e-0000-4000-8000-000000000001}" name="Ubuntu VM"/>
  </VirtualSystem>
</Envelope>
"""


def test_virtualbox_style_package(reg: Registry, tmp_path: Path) -> None:
    raw = tmp_path / "src.img"
    raw.write_bytes(bytes(32 * MiB))
    write(str(raw), 5 * MiB, b"from virtualbox" * 50)
    vmdk = tmp_path / "d.vmdk"
    convert(str(raw), str(vmdk), "vmdk", variant="streamOptimized")
    ova = _package(tmp_path, "ubuntu.ova", VBOX_OVF, {"Ubuntu VM-disk001.vmdk": vmdk})
    _refused(reg, ova, MachineRuleError, "'Ubuntu VM' is not a VM name")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = import_appliance(reg, ova, name="ubuntu")
    said = [str(w.message) for w in caught]
    assert "skipped usb: ResourceType 23 (USB controller) is not modelled by netstore" in said
    assert "skipped sound: ResourceType 35 (sound card) is not modelled by netstore" in said
    assert any("dvd drive at ide port 1 device 1 is empty" in s for s in said)
    vm = r.machine
    assert (vm.cpus, vm.memory_mb, vm.ostype) == (2, 2048, "Ubuntu_64")
    assert [(c.name, c.bus, c.chipset) for c in reg.machines.controllers("ubuntu")] == [
        ("ide0", "ide", "PIIX4"), ("sata0", "sata", "AHCI")]
    atts = reg.machines.attachments("ubuntu")
    assert [(a.controller, a.port, a.medium) for a in atts] == [("sata0", 0, "ubuntu-disk1")]
    qemu_img("compare", str(raw), atts[0].location)
    nics = reg.machines.nics("ubuntu")
    assert [(n.slot, n.switch, n.vlan) for n in nics] == [(0, "NAT", 1)]


OVFTOOL_OVF = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-123" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:r="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:v="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="esx-disk1.vmdk" ovf:id="file1" ovf:size="%(size)d"/>
  </References>
  <VirtualSystem ovf:id="esx">
    <Info>A virtual machine</Info>
    <Name>esx</Name>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <v:ElementName>Virtual Hardware Family</v:ElementName>
        <v:InstanceID>0</v:InstanceID>
        <v:VirtualSystemIdentifier>esx</v:VirtualSystemIdentifier>
        <v:VirtualSystemType>vmx-13</v:VirtualSystemType>
      </System>
      <Item>
        <r:AllocationUnits>hertz * 10^6</r:AllocationUnits>
        <r:Description>Number of Virtual CPUs</r:Description>
        <r:ElementName>4 virtual CPU(s)</r:ElementName>
        <r:InstanceID>1</r:InstanceID>
        <r:ResourceType>3</r:ResourceType>
        <r:VirtualQuantity>4</r:VirtualQuantity>
      </Item>
      <Item>
        <r:AllocationUnits>byte * 2^30</r:AllocationUnits>
        <r:ElementName>1GB of memory</r:ElementName>
        <r:InstanceID>2</r:InstanceID>
        <r:ResourceType>4</r:ResourceType>
        <r:VirtualQuantity>1</r:VirtualQuantity>
      </Item>
      <Item>
        <r:AddressOnParent>0</r:AddressOnParent>
        <r:ElementName>Hard disk 1</r:ElementName>
        <r:HostResource>ovf:/disk/vmdisk1</r:HostResource>
        <r:InstanceID>9</r:InstanceID>
        <r:Parent>3</r:Parent>
        <r:ResourceType>17</r:ResourceType>
      </Item>
      <Item>
        <r:Address>0</r:Address>
        <r:ElementName>SCSI controller 0</r:ElementName>
        <r:InstanceID>3</r:InstanceID>
        <r:ResourceSubType>lsilogic</r:ResourceSubType>
        <r:ResourceType>6</r:ResourceType>
      </Item>
      <Item>
        <r:Address>005056AB0001</r:Address>
        <r:AutomaticAllocation>true</r:AutomaticAllocation>
        <r:Connection>VM Network</r:Connection>
        <r:ElementName>Network adapter 1</r:ElementName>
        <r:InstanceID>7</r:InstanceID>
        <r:ResourceSubType>VmxNet3</r:ResourceSubType>
        <r:ResourceType>10</r:ResourceType>
      </Item>
      <Item ovf:required="false">
        <r:ElementName>Video card</r:ElementName>
        <r:InstanceID>8</r:InstanceID>
        <r:ResourceType>24</r:ResourceType>
      </Item>
    </VirtualHardwareSection>
    <OperatingSystemSection ovf:id="101" vmw:osType="debian10_64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
  </VirtualSystem>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network"><Description>The VM Network network</Description></Network>
  </NetworkSection>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="16" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" ovf:populatedSize="65536"/>
  </DiskSection>
</Envelope>
"""


def test_ovftool_style_package(reg: Registry, tmp_path: Path) -> None:
    q = tmp_path / "src.qcow2"
    qemu_img("create", "-f", "qcow2", str(q), "16M")
    write(str(q), 0, b"ovftool" * 100)
    vmdk = tmp_path / "d.vmdk"
    convert(str(q), str(vmdk), "vmdk", variant="streamOptimized")
    ova = _package(tmp_path, "esx.ova", OVFTOOL_OVF % {"size": vmdk.stat().st_size},
                   {"esx-disk1.vmdk": vmdk})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = import_appliance(reg, ova)
    said = [str(w.message) for w in caught]
    assert "skipped Video card: ResourceType 24 (graphics controller) is not modelled by " \
           "netstore" in said
    assert "NIC 0: network 'VM Network' is not a switch name; it joins switch VM-Network" in said
    vm = r.machine
    assert (vm.name, vm.cpus, vm.memory_mb) == ("esx", 4, 1024)
    assert [(c.bus, c.chipset) for c in reg.machines.controllers("esx")] == [("scsi", "LsiLogic")]
    a = reg.machines.attachments("esx")
    assert [(x.controller, x.port) for x in a] == [("scsi0", 0)]
    qemu_img("compare", str(q), a[0].location)
    assert [(n.mac, n.switch) for n in reg.machines.nics("esx")] == [
        ("00:50:56:ab:00:01", "VM-Network")]
