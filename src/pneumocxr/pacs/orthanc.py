"""Orthanc's change feed: ``GET /changes?since=N`` → StableStudy events, resumable by sequence number.

The worker persists the last sequence number it handled, so a restart resumes where it stopped
and no study is announced twice to it (and if it is, the jobs table makes that harmless).
"""

from __future__ import annotations

import requests

from pneumocxr.pacs.dicomweb import PacsUnavailable, split_credentials


class OrthancChanges:
    def __init__(self, url: str, *, timeout_s: float = 30.0):
        self.url, credentials = split_credentials(url.rstrip("/"))
        self.session = requests.Session()
        if credentials is not None:
            self.session.auth = credentials
        self.timeout_s = timeout_s

    def stable_studies(self, since: int, limit: int = 100) -> tuple[list[str], int, bool]:
        """(StudyInstanceUIDs of StableStudy changes after ``since``, the last sequence number, done)."""
        feed = self._get("/changes", params={"since": since, "limit": limit})
        studies = []
        for change in feed.get("Changes", []):
            if change.get("ChangeType") == "StableStudy":
                tags = self._get(f"/studies/{change['ID']}").get("MainDicomTags", {})
                if tags.get("StudyInstanceUID"):
                    studies.append(tags["StudyInstanceUID"])
        return studies, int(feed.get("Last", since)), bool(feed.get("Done", True))

    def _get(self, path: str, params: dict | None = None) -> dict:
        try:
            response = self.session.get(self.url + path, params=params, timeout=self.timeout_s)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise PacsUnavailable(f"Orthanc at {self.url} is unreachable ({type(exc).__name__})") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise PacsUnavailable(f"Orthanc at {self.url} answered HTTP {response.status_code}")
        response.raise_for_status()
        return response.json()
