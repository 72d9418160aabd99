"""``streamer``: run the server and manage people from the shell.

Commands::

    streamer [OPTIONS] COMMAND [OPTIONS] ...   (OPTIONS before or after the command:
             --config PATH --data-dir DIR --url URL --token T --log-level L --debug)
    streamer serve [--host H] [--port P]
    streamer enroll NAME FILE... [--person ID] [--info JSON]
    streamer identify FILE [--top-k N] [--room R]
    streamer verify PERSON FILE [--room R]
    streamer people
    streamer update PERSON [--name NAME] [--info JSON]
    streamer delete PERSON
    streamer import DIR [--jobs N] [--update] [--json FILE] [--quiet]   (streamer.importer)
    streamer calibrate DIR [--target-far F] [--enrol-s S] [--plot PNG] [--json OUT] [--room R]
                           [--write-config [PATH]]

The people commands open the data dir directly (refused, naming the server's URL, when a
running server owns it: see :mod:`streamer.datadir`), or, with ``--url
ws://HOST:PORT``, ask a running server over ``/v1/api`` (``--token`` when auth is on).
Audio files are decoded here and sent as 16 kHz PCM; several files for one enrolment
are joined. ``calibrate`` needs no server: it measures ``match.max_distance`` on
labelled speech (``DIR/SPEAKER/*.wav|flac|ogg|mp3``) with the configured model and VAD
(:mod:`streamer.calibrate`). Exit codes: 0 done (``verify``: accepted), 1 ``verify``
rejected or ``identify`` found nobody, 2 an error. Only this module calls ``sys.exit`` and sets up
logging.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import wire
from .audio import float_to_s16le, read_file
from .config import Config, RegistryConfig, ServerConfig, load_config
from .connect import one_line, ws_url
from .errors import StreamerError

__all__ = ["main"]

logger = logging.getLogger("streamer.cli")


def _load(args: argparse.Namespace) -> Config:
    path = args.config
    if path is None and Path("config.yaml").is_file():
        path = "config.yaml"
    config = load_config(path)
    if getattr(args, "data_dir", None):
        # as typed: relative to the working directory, not to the config file
        config = config.replace(registry=RegistryConfig(data_dir=str(Path(args.data_dir).resolve())))
    return config


async def _serve(config: Config, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM. Owns the data dir meanwhile (``DATA/owner.lock``, with
    the URL once listening); raises :class:`~streamer.datadir.DataDirInUse` when a live
    server or command already owns it, naming its pid and URL."""
    from .app import App
    from .server import StreamerServer

    app = App(config)
    app.check_listen(host)
    app.load()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with StreamerServer(app, host, port) as server:
            app.listening(server.url)
            print(f"listening on {server.url}", flush=True)
            print(f"web pages: http://{host}:{server.port}/ (room display, enrolment)", flush=True)
            await stop.wait()
            print("shutting down", flush=True)
    finally:
        app.close()


def _request_audio(files: Sequence[str]) -> dict[str, Any]:
    """Decode and join ``files``: the ``pcm`` fields of a request."""
    parts = [read_file(f) for f in files]
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return {"pcm": float_to_s16le(samples), "sample_rate": 16000, "format": "s16le"}


async def _call(config: Config, args: argparse.Namespace, message: dict[str, Any]) -> dict[str, Any]:
    """Send one request to ``--url`` or answer it from the data dir directly.

    Offline, the data dir is owned only while the request runs; raises
    :class:`~streamer.datadir.DataDirInUse` when a server owns it (the message says to use
    ``--url`` with that server's URL) or another command does.
    """
    message = {"id": 1, **message}
    if args.url:
        from websockets.asyncio.client import connect

        headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
        url = ws_url(args.url) + "/v1/api"
        async with connect(url, additional_headers=headers, max_size=None) as ws:
            await ws.send(wire.encode(message, wire.Encoding.MSGPACK))
            reply, _ = wire.decode(await ws.recv())
            return reply
    from .api import Api
    from .app import App

    app = App(config, owner="cli", command=args.command)
    app.load()
    if app.registry is None or app.worker is None:  # pragma: no cover - load() sets both
        raise RuntimeError("the app did not load")
    app.worker.start()
    try:
        request = wire.parse_request(message, wire.Encoding.MSGPACK)
        try:
            return await Api(config, app.registry, app.worker, app.lines).handle(request)
        except StreamerError as err:
            return {"type": "error", "code": err.code, "message": str(err)}
    finally:
        await app.worker.close(5.0)
        app.close()


def _print_people(people: list[dict[str, Any]]) -> None:
    if not people:
        print("nobody enrolled")
        return
    print(f"{'id':<16} {'speech_s':>8}  name")
    for p in people:
        print(f"{p['id']:<16} {p['speech_s']:>8.1f}  {p['name']}")


def _print_reply(reply: dict[str, Any]) -> int:
    kind = reply.get("type")
    if kind == "error":
        print(f"error ({reply.get('code')}): {reply.get('message')}", file=sys.stderr)
        return 2
    if kind == "enrolled":
        p = reply["person"]
        print(f"enrolled {p['name']} as {p['id']} ({p['speech_s']:.1f} s of speech in total)")
        for warning in reply.get("quality", {}).get("warnings", []):
            print(f"warning: {warning}")
        return 0
    if kind == "identified":
        match = reply.get("match")
        if match:
            print(f"{match['name']} ({match['id']}), distance {match['distance']:.3f}")
        elif reply.get("results"):
            print("nobody enrolled is close enough")
        else:
            print("nobody enrolled")
        if reply.get("results"):
            print(f"\n{'rank':>4}  {'distance':>8}  {'id':<16} name")
            for i, r in enumerate(reply["results"], 1):
                print(f"{i:>4}  {r['distance']:>8.3f}  {r['id']:<16} {r['name']}")
        threshold = reply.get("threshold")
        if threshold is not None:
            margin = reply.get("margin") or 0
            ahead = (f" and at least {margin} nearer than the second (large gallery)"
                     if margin else "")
            print(f"\nmatch when distance <= {threshold}{ahead}")
        return 0 if match else 1
    if kind == "verified":
        verdict = "accepted" if reply["accepted"] else "rejected"
        print(f"{verdict}: distance {reply['distance']:.3f} (threshold {reply['threshold']})")
        return 0 if reply["accepted"] else 1
    if kind == "people":
        people, total = reply["people"], reply.get("total", len(reply["people"]))
        offset = reply.get("offset", 0)
        if not people and total:
            print(f"nobody here: {total} match, offset {offset} is past the end")
            return 0
        _print_people(people)
        if total > len(people):
            more = (f"; next page: --offset {offset + len(people)}"
                    if offset + len(people) < total else "")
            print(f"\n{offset + 1}-{offset + len(people)} of {total}{more}")
        return 0
    if kind == "person":
        _print_people([reply["person"]])
        return 0
    if kind == "deleted":
        print(f"deleted {reply['person']}")
        return 0
    print(json.dumps(reply))
    return 0


def _common_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """The options every command takes, before or after the command name.

    On the top-level parser they carry the defaults; on each command's parser they are
    ``SUPPRESS``ed, so a value given before the command is not overwritten."""
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("options of every command")
    group.add_argument("--config", default=default(None), metavar="PATH",
                       help="config file (default: ./config.yaml if present)")
    group.add_argument("--data-dir", default=default(None), metavar="DIR",
                       help="data folder (overrides registry.data_dir)")
    group.add_argument("--url", default=default(None),
                       help="a running server, ws://HOST:PORT or the http:// address "
                            "`streamer serve` prints (people commands)")
    group.add_argument("--token", default=default(None),
                       help="token for --url (admin role when auth is on)")
    group.add_argument("--log-level", default=default(os.environ.get("STREAMER_LOG", "INFO")),
                       metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    group.add_argument("--debug", action="store_true", default=default(False),
                       help="show the traceback of an error")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer", description=__doc__.split("\n")[0])
    _common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common_options(p, top=False)
        return p

    serve = command("serve", "run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int, help="0 picks a free port")
    people_command = command

    enroll = people_command("enroll", "enrol a person from audio files")
    enroll.add_argument("name")
    enroll.add_argument("files", nargs="+")
    enroll.add_argument("--person", help="add the speech to this existing person id")
    enroll.add_argument("--info", help="JSON object stored with the person")
    identify = people_command("identify", "who is speaking in FILE (1:N)")
    identify.add_argument("file")
    identify.add_argument("--top-k", type=int, default=5)
    verify = people_command("verify", "is FILE spoken by PERSON (1:1)")
    verify.add_argument("person")
    verify.add_argument("file")
    for cmd in (identify, verify):
        cmd.add_argument("--room", help="decide as that room's live streams do (its profile "
                         "in rooms: VAD and threshold)")
    people = people_command("people", "list enrolled people (a page at a time)")
    people.add_argument("--query", help="only names containing this (any case), or this id")
    people.add_argument("--limit", type=int, default=1000,
                        help="people per page (default 1000, at most 10000)")
    people.add_argument("--offset", type=int, default=0, help="people to skip (default 0)")
    update = people_command("update", "rename a person or change their info")
    update.add_argument("person")
    update.add_argument("--name")
    update.add_argument("--info")
    delete = people_command("delete", "delete a person and their voice data")
    delete.add_argument("person")
    from . import importer

    importer.add_arguments(people_command("import", importer.HELP))

    demo = command("demo", "a server with sample voices and a conversation in room 'demo' "
                           "(no microphone needed)")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    demo.add_argument("--loops", type=int, default=0,
                      help="stop after this many passes of the conversation (0: until Ctrl-C)")
    demo.add_argument("--speed", type=float, default=1.0,
                      help="pace of the conversation, times real time (default 1)")

    cal = command("calibrate", "recommend match.max_distance from labelled speech")
    cal.add_argument("dir", help="DIR/SPEAKER/*.wav|flac|ogg|mp3; speakers with one file "
                     "are only used as never-enrolled voices")
    cal.add_argument("--target-far", type=float, default=0.01,
                     help="largest acceptable 1:N false-accept rate (default 0.01)")
    cal.add_argument("--enrol-s", type=float, default=8.0,
                     help="speech seconds per enrolment (default 8)")
    cal.add_argument("--plot", help="write a DET curve and score histograms to this PNG")
    cal.add_argument("--json", help="write the results and all distances to this file")
    cal.add_argument("--room", help="measure as live streams of ROOM run: the VAD of its "
                     "profile in rooms (e.g. far), and its threshold as the current value")
    cal.add_argument("--force", action="store_true",
                     help="--write-config even when too few impostor trials back the value")
    cal.add_argument("--write-config", nargs="?", const="", default=None, metavar="PATH",
                     help="set match.max_distance in PATH (default: --config or ./config.yaml)")
    return parser


def _calibrate(config: Config, args: argparse.Namespace) -> int:
    """``streamer calibrate``: embed DIR, print the recommendation, write the extras."""
    from . import calibrate as cal
    from .embedder import Embedder
    from .app import line_channels
    from .stream_embedder import StreamEmbedder

    if not args.enrol_s > 0:
        raise ValueError(f"--enrol-s must be > 0 seconds, got {args.enrol_s}")
    if not 0 < args.target_far < 1:
        raise ValueError(f"--target-far must be between 0 and 1, got {args.target_far}")
    if args.room is not None and args.write_config is not None:
        raise ValueError("--write-config sets the top-level match.max_distance; for room "
                         f"{args.room!r} set the max_distance of its profile in rooms "
                         "(docs/configuration.md)")
    current = config.match.max_distance
    where = ""
    if args.room is not None:
        profile = config.room_profile(args.room)
        config = config.for_room(args.room)
        current = config.match.max_distance_for(args.room)
        where = (f", room {args.room!r}: "
                 + ("no profile" if profile is None else f"profile {profile.describe()}"))
    files = cal.find_speakers(args.dir)
    embedder = Embedder(config.model_path, threads=config.model.threads)
    embedder.load()
    variant, line = None, False
    if config.match.channel != "wideband":  # enrolled by the model, heard by the variant
        variant = StreamEmbedder(embedder, config.match.channel,
                                 config.model.precision(config.match.channel))
        variant.load()
        where += f"; trials heard by its {config.match.channel} variant"
        # a server keeps line voiceprints for such rooms: enrolments make those
        line = config.match.channel in line_channels(config, {config.match.channel: variant})
        if line:
            where += ", enrolments as its line voiceprints"
    print(f"calibrating on {args.dir}: {len(files)} speakers, "
          f"{sum(len(v) for v in files.values())} files (model {embedder.model_id}, "
          f"vad.aggressiveness {config.vad.aggressiveness}{where})", flush=True)
    items = cal.embed_files(files, config, embedder, threads=config.worker.threads,
                            trial_embedder=variant, line_voiceprints=line)
    scores = cal.score(items, args.enrol_s)
    rec = cal.recommend(scores, args.target_far, current)
    print(cal.format_report(scores, rec, args.enrol_s))
    if args.plot:
        try:
            cal.save_calibration_png(args.plot, scores, {"current": rec.current,
                                                          "recommended": rec.threshold})
            print(f"wrote {args.plot}")
        except cal.PlotUnavailable as err:
            print(f"no plot: {err}", file=sys.stderr)
    if args.json:
        data = cal.report_json(scores, rec, folder=str(args.dir), model_id=embedder.model_id,
                               enrol_s=args.enrol_s)
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.write_config is not None:
        if not rec.reliable and not args.force:
            print(f"error: not writing the config: only {rec.impostor_trials} impostor trials "
                  f"back the recommendation ({rec.trials_needed} needed for a "
                  f"{100 * rec.target_far:g}% target); add speakers, or pass --force",
                  file=sys.stderr)
            return 2
        target = args.write_config or args.config or "config.yaml"
        print(cal.write_max_distance(target, rec.threshold))
    return 0


def _message(args: argparse.Namespace) -> dict[str, Any]:
    info = json.loads(args.info) if getattr(args, "info", None) else None
    if args.command == "enroll":
        msg: dict[str, Any] = {"type": "enroll", "name": args.name, **_request_audio(args.files)}
        if info is not None:
            msg["info"] = info
        if args.person:
            msg["person"] = args.person
        return msg
    room = {} if getattr(args, "room", None) is None else {"room": args.room}
    if args.command == "identify":
        return {"type": "identify", "top_k": args.top_k, **room, **_request_audio([args.file])}
    if args.command == "verify":
        return {"type": "verify", "person": args.person, **room, **_request_audio([args.file])}
    if args.command == "people":
        msg = {"type": "people", "limit": args.limit, "offset": args.offset}
        if args.query:
            msg["query"] = args.query
        return msg
    if args.command == "update":
        msg = {"type": "update_person", "person": args.person}
        if args.name is not None:
            msg["name"] = args.name
        if info is not None:
            msg["info"] = info
        return msg
    return {"type": "delete_person", "person": args.person}


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``streamer`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.url is not None and args.command in ("serve", "calibrate", "demo"):
        parser.error(f"{args.command} does not use --url: it works here, not on a server")
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        config = _load(args)
        if args.command == "calibrate":
            sys.exit(_calibrate(config, args))
        if args.command == "demo":
            from .demo import run_demo

            sys.exit(run_demo(config, args))
        if args.command == "serve":
            server = config.server
            config = config.replace(server=ServerConfig(**{
                **{f: getattr(server, f) for f in server.__dataclass_fields__},
                "host": args.host or server.host,
                "port": server.port if args.port is None else args.port,
            }))
            asyncio.run(_serve(config, config.server.host, config.server.port))
            sys.exit(0)
        if args.command == "import":
            from .importer import run_import

            sys.exit(run_import(config, args))
        reply = asyncio.run(_call(config, args, _message(args)))
    except Exception as err:
        if args.debug:
            raise
        print(f"error: {one_line(err, args.url, 'admin')}", file=sys.stderr)
        sys.exit(2)
    sys.exit(_print_reply(reply))
