"""Debian's own nginx configuration, copied, with notifier's recipe dropped in as
docs/deployment.md says (conf.d/ and the two includes), Debian's default site still enabled:
the recipe must work there as it is, listen ports and node addresses aside."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.cluster import ROOT, Nginx
from tests.service_process import free_port

DEBIAN_NGINX = Path("/etc/nginx")


class DebianNginx(Nginx):
    """`Nginx`, started and stopped the same way, on a copy of Debian's configuration."""

    def __init__(self, directory: Path, upstreams: list[str], *, tls: bool = False) -> None:
        super().__init__(directory, upstreams)
        self.etc = directory / "etc-nginx"
        self.tls_port = free_port() if tls else None
        self.tls = tls

    def _configure(self) -> Path:
        shutil.copytree(DEBIAN_NGINX, self.etc, symlinks=True)
        recipe = ROOT / "deploy" / "nginx"
        site = (recipe / ("notifier-tls.conf" if self.tls else "notifier.conf")).read_text()
        lines = [line for line in site.splitlines() if not line.strip().startswith("server 127.0.0.1:808")]
        at = next(i for i, line in enumerate(lines) if "hash $remote_addr" in line) + 1
        lines[at:at] = [f"    server {upstream} max_fails=1 fail_timeout=5s;" for upstream in self.upstreams]
        site = "\n".join(lines)
        # The name clients use here is 127.0.0.1: Debian's default site answers every other.
        site = site.replace("server_name notifier.example.com;", "server_name 127.0.0.1;")
        site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        if self.tls:
            certificate, key = self._certificate()
            site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{self.tls_port} ssl;")
            site = site.replace("/etc/ssl/certs/notifier.example.com.pem", str(certificate))
            site = site.replace("/etc/ssl/private/notifier.example.com.key", str(key))
        (self.etc / "conf.d" / "notifier.conf").write_text(site)
        for include in ("notifier_proxy.conf", "notifier_socketio.conf"):
            shutil.copyfile(recipe / include, self.etc / include)
        # Debian's default site, on the same port, still the default server there.
        default = self.etc / "sites-enabled" / "default"
        text = (
            default.read_text()
            if default.exists()
            else (self.etc / "sites-available" / "default").read_text()
        )
        text = text.replace("listen 80 default_server;", f"listen 127.0.0.1:{self.port} default_server;")
        text = text.replace("listen [::]:80 default_server;", "")
        if default.is_symlink():
            default.unlink()
        default.write_text(text)
        main = self.etc / "nginx.conf"
        config = main.read_text().replace("/etc/nginx/", f"{self.etc}/")
        config = config.replace("user www-data;", "user root;")
        config = config.replace("pid /run/nginx.pid;", f"pid {self.directory}/nginx.pid;")
        config = config.replace("/var/log/nginx/", f"{self.directory}/")
        main.write_text(config)
        for path in self.etc.rglob("*"):
            if path.is_file() and not path.is_symlink():
                path.write_text(path.read_text(errors="replace").replace("/etc/nginx/", f"{self.etc}/"))
        return main

    def _certificate(self) -> tuple[Path, Path]:
        certificate, key = self.directory / "cert.pem", self.directory / "key.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(certificate),
            ],
            check=True,
            capture_output=True,
        )
        return certificate, key
