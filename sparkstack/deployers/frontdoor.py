"""The front door deployer: one OpenAI-compatible endpoint on the host, whatever model is hot.

Installs python3-aiohttp from the distribution, the door's own system user, the program and its unit
(enabled and running, unlike the models), and the switch socket it asks for on-demand switches on
(listening only while the group sets sparkstack_frontdoor_on_demand), and its TLS certificate when the group
asks for TLS. The door is restarted only when its program, its unit, its certificate or the registry it reads
changed.
"""

from __future__ import annotations

import io
import shlex

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from sparkstack.client_keys import ClientKeyError, clients_document
from sparkstack_host.contract import switch_socket_listens, wedge_watch_on
from sparkstack.deployers.helpers import distribution_package, put_component
from sparkstack.groups import GroupSettings
from sparkstack.render import FRONTDOOR_UNIT, FRONTDOOR_USER, SWITCH_SOCKET_UNIT, Rendering
from sparkstack_host.contract import DOOR_CERT_PATH, DOOR_CLIENTS_PATH, DOOR_KEY_PATH, TLS_DIR

COMPONENT = "frontdoor"
PACKAGE = "python3-aiohttp"
METRICS_PACKAGE = "python3-prometheus-client"


@deploy("sparkstack front door")
def frontdoor(rendering: Rendering, settings: GroupSettings, registry_op, package_ops: list) -> None:
    distribution_package(PACKAGE, "the front door's HTTP server and client")
    distribution_package(METRICS_PACKAGE, "the front door's Prometheus metrics")
    server.group(name=f"Group {FRONTDOOR_USER} (may ask for switches on the switch socket)", group=FRONTDOOR_USER,
                 system=True)
    server.user(name=f"User {FRONTDOOR_USER} (runs the front door)", user=FRONTDOOR_USER, group=FRONTDOOR_USER,
                system=True, shell="/usr/sbin/nologin", home="/nonexistent", create_home=False)
    ops = put_component(rendering, COMPONENT)
    tls_ops = door_certificate(settings) if settings.frontdoor_tls else []
    clients_op = client_digests(settings)
    systemd.daemon_reload(name="Reload systemd (a front door unit changed)",
                          _if=any_changed(ops["frontdoor-unit"], ops["switch-socket"], ops["switch-request-unit"]))
    listens = switch_socket_listens(rendering.registry)
    why = [w for w, on in (("on-demand switching", settings.frontdoor_on_demand),
                           ("the wedge watch", wedge_watch_on(rendering.registry.get("wedge")))) if on]
    systemd.service(name=f"{SWITCH_SOCKET_UNIT} {'listening' if listens else 'off'} "
                         f"({' and '.join(why) + ' on' if why else 'on-demand switching and the wedge watch off'})",
                    service=SWITCH_SOCKET_UNIT, running=listens, enabled=listens)
    systemd.service(name=f"Run {FRONTDOOR_UNIT}, enabled at boot", service=FRONTDOOR_UNIT, running=True, enabled=True)
    systemd.service(name=f"Restart {FRONTDOOR_UNIT} (its program, the host package, its unit or the registry changed)",
                    service=FRONTDOOR_UNIT, restarted=True,
                    _if=any_changed(ops["frontdoor"], ops["frontdoor-unit"], registry_op, clients_op, *package_ops, *tls_ops))


def client_digests(settings: GroupSettings):
    """The named clients' key digests (the keys stay on this machine: sparkstack/client_keys.py). Written even
    when the group lists none, so a client taken out is revoked."""
    try:
        document = clients_document(host.name, list(settings.frontdoor_clients))
    except (ClientKeyError, OSError) as exc:
        raise DeployError(f"{host.name}: sparkstack_frontdoor_clients: {exc}") from None
    names = ", ".join(settings.frontdoor_clients) or "none"
    return files.put(name=f"{DOOR_CLIENTS_PATH} (the client keys' digests: {names})", src=io.StringIO(document),
                     dest=DOOR_CLIENTS_PATH, user="root", group=FRONTDOOR_USER, mode="0640")


def self_signed_command(hostnames: list[str]) -> str:
    """openssl on the host: an EC P-256 certificate for loopback, the host's name, NAME.local, its addresses
    (`hostname -I`) and the listed names; the key written by openssl straight into a file only root and the
    door's group may read."""
    names = ["DNS:localhost", "IP:127.0.0.1", "IP:::1"] + [f"DNS:{name}" for name in hostnames]
    return (f'names="{",".join(names)},DNS:$(hostname),DNS:$(hostname).local"; '
            'for address in $(hostname -I); do names="$names,IP:$address"; done; '
            f"umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 "
            f'-subj "/CN=$(hostname)" -addext "subjectAltName=$names" -keyout {DOOR_KEY_PATH} -out {DOOR_CERT_PATH} '
            f"2>/dev/null && chgrp {shlex.quote(FRONTDOOR_USER)} {DOOR_KEY_PATH} && chmod 0640 {DOOR_KEY_PATH} "
            f"&& chmod 0644 {DOOR_CERT_PATH}")


def door_certificate(settings: GroupSettings) -> list:
    """The owner's certificate and key, installed; or a self-signed pair made on the host once. Never made
    again while it is there: every client that trusts it would break."""
    files.directory(name=f"{TLS_DIR} (the door's certificate)", path=TLS_DIR, user="root", group=FRONTDOOR_USER,
                    mode="0750")
    if settings.frontdoor_tls_cert is not None:
        return [
            files.put(name=f"{DOOR_CERT_PATH} (the owner's certificate)", src=str(settings.frontdoor_tls_cert),
                      dest=DOOR_CERT_PATH, user="root", group=FRONTDOOR_USER, mode="0644"),
            files.put(name=f"{DOOR_KEY_PATH} (its key, for the door's group only)", src=str(settings.frontdoor_tls_key),
                      dest=DOOR_KEY_PATH, user="root", group=FRONTDOOR_USER, mode="0640"),
        ]
    made = []
    if host.get_fact(File, path=DOOR_CERT_PATH) is None or host.get_fact(File, path=DOOR_KEY_PATH) is None:
        made.append(server.shell(name="Make a self-signed certificate for the door (once)",
                                 commands=[self_signed_command(list(settings.frontdoor_hostnames))]))
    made.append(files.file(name=f"{DOOR_KEY_PATH} readable by the door's group only", path=DOOR_KEY_PATH, user="root",
                           group=FRONTDOOR_USER, mode="0640"))
    return made
