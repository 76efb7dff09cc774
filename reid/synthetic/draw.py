"""Drawing the synthetic twin's crops with PIL: kits, people, poses, courts, the camera.

A person is drawn in "person units" (1.0 = standing height, feet at y = 0, y downwards) as a 2D
skeleton of thick shaded limbs, a shirt polygon with trim and number, shorts or trousers, shoes and a
head with hair; a crop is a detector-like box around one person, on a court background, maybe with
another person in front or behind, then blurred, re-lit, noised and JPEG-encoded. Every random
choice comes from a generator seeded with (seed, ids), so a crop is the same bytes whoever draws it.
``reid.synthetic.twin`` decides who is drawn where; this module only draws.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

Role = Literal["team_a", "team_b", "referee", "coach"]
RGB = tuple[int, int, int]


# ----------------------------------------------------------------------------------------------------
# Appearance: kits, people, courts
# ----------------------------------------------------------------------------------------------------

KIT_COLOURS: dict[str, RGB] = {
    "white": (236, 236, 232), "black": (28, 28, 32), "navy": (24, 36, 84), "royal": (30, 70, 170),
    "red": (190, 30, 40), "maroon": (110, 25, 40), "green": (20, 120, 60), "darkgreen": (16, 70, 40),
    "yellow": (240, 200, 40), "gold": (200, 160, 60), "orange": (230, 110, 30), "purple": (90, 40, 130),
    "skyblue": (110, 170, 220), "grey": (130, 132, 138), "teal": (20, 130, 140), "pink": (225, 120, 160),
}
HAIR_COLOURS: tuple[RGB, ...] = ((20, 16, 14), (35, 25, 20), (60, 40, 28), (95, 65, 40), (150, 110, 60),
                                 (200, 165, 100), (120, 55, 30), (150, 150, 150))
HAIR_STYLES = ("short", "short", "buzz", "bald", "afro", "long", "bun", "curly")
SHOE_COLOURS: tuple[RGB, ...] = ((240, 240, 240), (25, 25, 25), (200, 40, 40), (40, 90, 200), (240, 200, 40),
                                 (60, 180, 90), (240, 120, 30), (150, 150, 150), (160, 80, 180), (60, 220, 220))
SOCK_COLOURS: tuple[RGB, ...] = ((240, 240, 240), (25, 25, 25), (200, 200, 200))
SUIT_COLOURS: tuple[RGB, ...] = ((30, 32, 40), (45, 45, 50), (25, 35, 65), (85, 85, 90), (60, 45, 35))


@dataclass(frozen=True)
class Kit:
    """A team's uniform colours."""

    jersey: RGB
    trim: RGB
    shorts: RGB
    number: RGB


@dataclass(frozen=True)
class Court:
    """What a sequence's camera sees behind the people, and its colour balance."""

    floor: RGB
    plank_angle: float  # radians, the direction of the floor boards in the image
    plank_width: float  # person units (a person is 1.0 tall)
    line: RGB
    paint: RGB
    board: RGB
    gains: tuple[float, float, float]  # white balance per channel
    referee_shirt: RGB
    referee_stripes: bool


@dataclass(frozen=True)
class Person:
    """Everything that stays the same across a person's frames."""

    player: int
    role: Role
    number: int  # shirt number; -1: none (coaches)
    kit: Kit | None  # players only
    skin: RGB
    hair: RGB
    hair_style: str
    beard: bool
    shoes: RGB
    shoe_trim: RGB
    socks: RGB
    sock_length: float  # person units above the ankle
    width: float  # build: shoulder / hip / limb width factor
    legs: float  # leg length factor
    headband: RGB | None
    arm_sleeve: RGB | None  # compression sleeve on one arm
    sleeve_side: int  # +1 right, -1 left
    knee_brace: RGB | None
    suit: RGB  # coaches' jacket and trousers
    tie: RGB
    base_height: float  # typical crop height in pixels (distance to the camera)


def _colour_distance(a: RGB, b: RGB) -> float:
    return float(np.linalg.norm(np.subtract(a, b)))


def sample_court(seed: int, sequence: int) -> tuple[Court, dict[str, Kit]]:
    """The court and the two teams' kits of one sequence."""
    rng = np.random.default_rng([seed, 2, sequence])
    wood = np.array([205, 160, 110]) * rng.uniform(0.8, 1.08) + rng.normal(0, 8, 3)
    names = list(KIT_COLOURS)
    while True:
        a, b = rng.choice(names, size=2, replace=False)
        if _colour_distance(KIT_COLOURS[a], KIT_COLOURS[b]) > 150:
            break
    kits = {role: _kit(str(name), rng) for role, name in (("team_a", a), ("team_b", b))}
    court = Court(
        floor=_rgb(wood),
        plank_angle=float(rng.uniform(-0.35, 0.35)),
        plank_width=float(rng.uniform(0.035, 0.07)),
        line=_rgb((240, 240, 235) if rng.random() < 0.7 else KIT_COLOURS[str(rng.choice(names))]),
        paint=KIT_COLOURS[str(rng.choice(["royal", "red", "navy", "green", "maroon", "orange", "purple", "teal"]))],
        board=KIT_COLOURS[str(rng.choice(names))],
        gains=tuple(float(g) for g in rng.uniform(0.9, 1.1, 3)),
        referee_shirt=_rgb((150, 152, 158) if rng.random() < 0.6 else (236, 236, 236)),
        referee_stripes=bool(rng.random() < 0.35),
    )
    return court, kits


def _kit(name: str, rng: np.random.Generator) -> Kit:
    jersey = KIT_COLOURS[name]
    others = [c for c in KIT_COLOURS.values() if _colour_distance(c, jersey) > 120]
    trim = others[int(rng.integers(len(others)))]
    number = trim if rng.random() < 0.6 else (KIT_COLOURS["white"] if sum(jersey) < 400 else KIT_COLOURS["black"])
    return Kit(jersey, trim, jersey if rng.random() < 0.85 else trim, number)


def sample_person(seed: int, player: int, role: Role, number: int, kits: dict[str, Kit]) -> Person:
    """A person's fixed appearance, drawn from (seed, player id); ``kits`` from the sequence's ``sample_court``."""
    rng = np.random.default_rng([seed, 3, player])
    tone = rng.beta(1.3, 1.3)
    skin = np.array([242, 210, 182]) * (1 - tone) + np.array([88, 58, 42]) * tone + rng.normal(0, 6, 3)
    is_player = role in ("team_a", "team_b")
    hair_style = str(rng.choice(HAIR_STYLES if is_player else ("short", "short", "buzz", "bald", "curly")))
    return Person(
        player=player,
        role=role,
        number=number,
        kit=kits.get(role),
        skin=_rgb(skin),
        hair=HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))] if tone < 0.5 else HAIR_COLOURS[int(rng.integers(3))],
        hair_style=hair_style,
        beard=bool(rng.random() < 0.25),
        shoes=SHOE_COLOURS[int(rng.integers(len(SHOE_COLOURS)))] if is_player else (25, 25, 25),
        shoe_trim=SHOE_COLOURS[int(rng.integers(len(SHOE_COLOURS)))],
        socks=SOCK_COLOURS[int(rng.integers(len(SOCK_COLOURS)))],
        sock_length=float(rng.choice([0.04, 0.08, 0.14, 0.2])),
        width=float(rng.uniform(0.82, 1.22)),
        legs=float(rng.uniform(0.93, 1.07)),
        headband=_rgb(rng.integers(0, 256, 3)) if is_player and rng.random() < 0.15 else None,
        arm_sleeve=SHOE_COLOURS[int(rng.integers(len(SHOE_COLOURS)))] if is_player and rng.random() < 0.2 else None,
        sleeve_side=int(rng.choice([-1, 1])),
        knee_brace=SOCK_COLOURS[int(rng.integers(2))] if is_player and rng.random() < 0.12 else None,
        suit=SUIT_COLOURS[int(rng.integers(len(SUIT_COLOURS)))],
        tie=_rgb(rng.integers(0, 256, 3)),
        base_height=float(np.exp(rng.uniform(np.log(60), np.log(200)))),
    )


def _rgb(value) -> RGB:
    r, g, b = np.clip(np.round(np.asarray(value, dtype=float)), 0, 255).astype(int).tolist()
    return (r, g, b)


def _shade(colour: RGB, factor: float) -> RGB:
    # Plain Python: called tens of thousands of times, where numpy's per-call cost dominates.
    r, g, b = (min(255, max(0, round(c * factor))) for c in colour)
    return (r, g, b)


# ----------------------------------------------------------------------------------------------------
# Pose: a 2D skeleton in person units (feet on y = 0 ... head top near y = -1; x to the right)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pose:
    """One frame's body configuration: joint positions in person units, and which way it faces."""

    facing: Literal["front", "back", "left", "right"]
    joints: dict[str, np.ndarray]  # name -> (2,) float64

    @property
    def side(self) -> bool:
        return self.facing in ("left", "right")


def sample_pose(person: Person, rng: np.random.Generator) -> Pose:
    """A random pose for one frame (coaches stand, players run, defend, shoot...)."""
    role = person.role
    facing = str(rng.choice(["front", "back", "left", "right"], p=[0.32, 0.32, 0.18, 0.18]))
    if role == "coach":
        action = str(rng.choice(["stand", "walk", "gesture"], p=[0.55, 0.25, 0.2]))
    elif role == "referee":
        action = str(rng.choice(["stand", "walk", "run", "gesture"], p=[0.3, 0.35, 0.25, 0.1]))
    else:
        action = str(rng.choice(["stand", "walk", "run", "defend", "shoot"], p=[0.24, 0.26, 0.26, 0.14, 0.1]))
    side = facing in ("left", "right")
    direction = 1.0 if facing == "right" else -1.0
    legs, width = person.legs, person.width
    thigh, shin = 0.245 * legs, 0.245 * legs
    upper_arm, forearm = 0.165, 0.15
    deg = np.deg2rad

    # Joint angles from the downward vertical, positive towards +x.
    if action == "run":
        swing = deg(rng.uniform(15, 38))
        thighs = (swing, -swing * rng.uniform(0.6, 1.0))
        bends = (deg(rng.uniform(20, 60)), deg(rng.uniform(40, 100)))
        arms = (-swing * 1.1, swing * 1.1)
        elbows = (deg(rng.uniform(60, 100)), deg(rng.uniform(60, 100)))
        lean = deg(rng.uniform(5, 18))
    elif action == "walk":
        swing = deg(rng.uniform(8, 22))
        thighs = (swing, -swing)
        bends = (deg(rng.uniform(0, 20)), deg(rng.uniform(10, 35)))
        arms = (-swing, swing)
        elbows = (deg(rng.uniform(5, 30)), deg(rng.uniform(5, 30)))
        lean = deg(rng.uniform(0, 8))
    elif action == "defend":
        spread = deg(rng.uniform(15, 30))
        thighs = (spread, -spread)
        bends = (deg(rng.uniform(40, 75)),) * 2
        raise_ = deg(rng.uniform(30, 80))
        arms = (raise_, -raise_ * rng.uniform(0.5, 1.0))
        elbows = (deg(rng.uniform(30, 80)), deg(rng.uniform(30, 80)))
        lean = deg(rng.uniform(10, 25))
    elif action == "shoot":
        thighs = (deg(rng.uniform(-5, 8)), deg(rng.uniform(-8, 5)))
        bends = (deg(rng.uniform(0, 40)),) * 2
        arms = (deg(rng.uniform(150, 175)), deg(rng.uniform(140, 175)))
        elbows = (deg(rng.uniform(10, 80)), deg(rng.uniform(20, 90)))
        lean = deg(rng.uniform(-5, 5))
    elif action == "gesture":
        thighs = (deg(rng.uniform(0, 10)), deg(rng.uniform(-10, 0)))
        bends = (deg(rng.uniform(0, 15)),) * 2
        arms = (deg(rng.uniform(60, 140)), deg(rng.uniform(-20, 5)))
        elbows = (deg(rng.uniform(0, 60)), deg(rng.uniform(0, 40)))
        lean = deg(rng.uniform(-3, 6))
    else:  # stand
        thighs = (deg(rng.uniform(2, 10)), deg(rng.uniform(-10, -2)))
        bends = (deg(rng.uniform(0, 15)),) * 2
        arms = (deg(rng.uniform(5, 20)), deg(rng.uniform(-20, -5)))
        elbows = (deg(rng.uniform(0, 35)), deg(rng.uniform(0, 35)))
        lean = deg(rng.uniform(-3, 5))
    if rng.random() < 0.5:  # mirror which limb leads
        thighs, bends, arms, elbows = thighs[::-1], bends[::-1], arms[::-1], elbows[::-1]

    joints: dict[str, np.ndarray] = {}
    up = np.array([math.sin(lean * (direction if side else 0.3 * rng.choice([-1, 1]))), -math.cos(lean)])
    hip = np.zeros(2)
    neck = hip + 0.31 * up
    across = np.array([-up[1], up[0]])  # perpendicular to the spine, pointing to +x when upright
    squash = 0.45 if side else 1.0
    joints["hip"], joints["neck"] = hip, neck
    joints["head"] = neck + 0.085 * up
    for k, sign in enumerate((1.0, -1.0)):  # 0: right limbs (+x in the front view), 1: left
        name = "r" if k == 0 else "l"
        shoulder = neck - 0.015 * up + sign * 0.108 * width * squash * across
        hip_joint = hip + sign * 0.072 * width * squash * across
        if side:
            # Swing forward/back in the image plane; knees bend the shin backwards.
            a_thigh = direction * thighs[k]
            a_shin = a_thigh - direction * bends[k]
            a_arm = direction * arms[k]
            a_fore = a_arm + direction * elbows[k]
            t_len, s_len = thigh, shin
        else:
            # Front/back view: a stride mostly shortens the leg; spread and bend open the knees.
            a_thigh = sign * (abs(thighs[k]) * 0.45 + 0.4 * bends[k] * 0.5)
            a_shin = sign * abs(thighs[k]) * 0.2
            a_arm = sign * (abs(arms[k]) * 0.4 + deg(5)) if abs(arms[k]) < deg(120) else sign * abs(arms[k]) * 0.95
            a_fore = a_arm + sign * elbows[k] * 0.5
            t_len = thigh * math.cos(0.5 * thighs[k]) * math.cos(0.45 * bends[k])
            s_len = shin * math.cos(0.3 * bends[k])
        knee = hip_joint + t_len * _down(a_thigh)
        ankle = knee + s_len * _down(a_shin)
        elbow = shoulder + upper_arm * _down(a_arm)
        wrist = elbow + forearm * _down(a_fore)
        joints.update({f"{name}_shoulder": shoulder, f"{name}_hip": hip_joint, f"{name}_knee": knee,
                       f"{name}_ankle": ankle, f"{name}_elbow": elbow, f"{name}_wrist": wrist})
    # Stand on the lower foot: the ground is y = 0.
    ground = max(joints["r_ankle"][1], joints["l_ankle"][1]) + 0.035
    if action == "shoot" and rng.random() < 0.5:
        ground += rng.uniform(0.03, 0.12)  # jumping
    joints = {k: v - np.array([0.0, ground]) for k, v in joints.items()}
    return Pose(facing=facing, joints=joints)


def _down(angle: float) -> np.ndarray:
    return np.array([math.sin(angle), math.cos(angle)])


def pose_bounds(person: Person, pose: Pose) -> tuple[float, float, float, float]:
    """(x_min, y_min, x_max, y_max) of the drawn body in person units, limb thickness included."""
    points = np.stack(list(pose.joints.values()))
    head = pose.joints["head"]
    pad = 0.05 * person.width
    x_min, x_max = points[:, 0].min() - pad, points[:, 0].max() + pad
    y_min = min(points[:, 1].min(), head[1] - 0.075) - 0.01
    y_max = points[:, 1].max() + 0.04
    if pose.side:
        x_min, x_max = x_min - 0.04, x_max + 0.04  # shoes stick out
    return float(x_min), float(y_min), float(x_max), float(y_max)


# ----------------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Painter:
    """Draws in person units on a PIL canvas: pixel = origin + scale * unit."""

    draw: ImageDraw.ImageDraw
    origin: np.ndarray  # (2,) pixels: where (0, 0), the feet of the person, lands
    scale: float  # pixels per person unit

    def px(self, point) -> tuple[float, float]:
        x, y = self.origin + self.scale * np.asarray(point, dtype=float)
        return float(x), float(y)

    def limb(self, a, b, width: float, colour: RGB, shading: float = 0.8) -> None:
        """A thick segment with round ends; ``shading`` < 1 darkens the side away from the light."""
        w = max(1, round(width * self.scale))
        pa, pb = self.px(a), self.px(b)
        self.draw.line([pa, pb], fill=colour, width=w)
        for p in (pa, pb):
            r = w / 2
            self.draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=colour)
        if shading < 1 and w >= 3:
            # The light comes from the upper left: the band sits on the right-hand side of the limb.
            direction = np.subtract(pb, pa)
            length = float(np.hypot(*direction)) or 1.0
            normal = np.array([direction[1], -direction[0]]) / length
            if normal[0] < 0:
                normal = -normal
            shift = normal * w * 0.3
            band = max(1, round(w * 0.4))
            self.draw.line([tuple(pa + shift), tuple(pb + shift)], fill=_shade(colour, shading), width=band)

    def polygon(self, points, colour: RGB, shading: float = 1.0) -> None:
        """A filled polygon; ``shading`` < 1 gives it darker rims (a rounded body) and a darker right side."""
        pixels = np.array([self.px(p) for p in points])
        if shading >= 1:
            self.draw.polygon([tuple(p) for p in pixels], fill=colour)
            return
        self.draw.polygon([tuple(p) for p in pixels], fill=_shade(colour, shading))
        centre = pixels.mean(axis=0)
        inner = centre + (pixels - centre) * np.array([0.72, 0.97]) - np.array([0.08 * np.ptp(pixels[:, 0]), 0])
        self.draw.polygon([tuple(p) for p in inner], fill=colour)

    def ellipse(self, centre, rx: float, ry: float, colour: RGB) -> None:
        x, y = self.px(centre)
        self.draw.ellipse([x - rx * self.scale, y - ry * self.scale, x + rx * self.scale, y + ry * self.scale], fill=colour)

    def chord(self, centre, rx: float, ry: float, start: float, end: float, colour: RGB) -> None:
        x, y = self.px(centre)
        box = [x - rx * self.scale, y - ry * self.scale, x + rx * self.scale, y + ry * self.scale]
        self.draw.chord(box, start, end, fill=colour)

    def text(self, centre, label: str, height: float, colour: RGB, squash: float = 1.0) -> None:
        size = max(4, round(height * self.scale))
        font = _font(size)
        x, y = self.px(centre)
        if squash < 0.99:
            # A side view: a narrower number, drawn on its own layer and squeezed horizontally.
            left, top, right, bottom = font.getbbox(label)
            layer = Image.new("L", (right - left + 2, bottom - top + 2), 0)
            ImageDraw.Draw(layer).text((1 - left, 1 - top), label, fill=255, font=font)
            layer = layer.resize((max(1, round(layer.width * squash)), layer.height))
            self.draw.bitmap((x - layer.width / 2, y - layer.height / 2), layer, fill=colour)
        else:
            self.draw.text((x, y), label, fill=colour, font=font, anchor="mm")


@lru_cache(maxsize=512)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def draw_person(painter: _Painter, person: Person, pose: Pose, court: Court) -> None:
    """Draw one person: legs, shoes, shorts or trousers, shirt, number, arms, head."""
    j = pose.joints
    role = person.role
    w = person.width
    facing, side = pose.facing, pose.side
    # In a side view the far limbs are drawn first and darker.
    if side:
        near = "r" if facing == "right" else "l"
        order = ["l", "r"] if near == "r" else ["r", "l"]
    else:
        order = ["l", "r"]

    if role in ("team_a", "team_b"):
        top, bottom, sleeves = person.kit.jersey, person.kit.shorts, None
    elif role == "referee":
        top, bottom, sleeves = court.referee_shirt, (22, 22, 24), court.referee_shirt
    else:
        top, bottom, sleeves = person.suit, person.suit, person.suit
    long_trousers = role in ("referee", "coach")

    def shade(colour: RGB, limb: str) -> RGB:
        return _shade(colour, 0.78 if side and limb != order[-1] else 1.0)

    # Shadow on the floor.
    shadow = _shade(court.floor, 0.72)
    painter.ellipse((float((j["r_ankle"][0] + j["l_ankle"][0]) / 2), 0.0), 0.16 * w + 0.05, 0.022, shadow)

    # Legs: skin, socks, knee brace, shoes; trousers for referees and coaches.
    for limb in order:
        hip, knee, ankle = j[f"{limb}_hip"], j[f"{limb}_knee"], j[f"{limb}_ankle"]
        if long_trousers:
            painter.limb(hip, knee, 0.075 * w, shade(bottom, limb))
            painter.limb(knee, ankle + np.array([0, -0.01]), 0.065 * w, shade(bottom, limb))
        else:
            painter.limb(hip, knee, 0.07 * w, shade(person.skin, limb))
            painter.limb(knee, ankle, 0.052 * w, shade(person.skin, limb))
            sock_top = ankle + (knee - ankle) * min(0.9, person.sock_length / 0.245)
            painter.limb(sock_top, ankle, 0.054 * w, shade(person.socks, limb), shading=0.88)
            if person.knee_brace is not None and limb == "l":
                painter.limb(knee + (ankle - knee) * 0.15, knee - (knee - j[f"{limb}_hip"]) * 0.25, 0.062 * w,
                             shade(person.knee_brace, limb))
        _shoe(painter, ankle, facing, shade(person.shoes, limb), shade(person.shoe_trim, limb))

    # Shorts (players): one wide panel per thigh plus the hip block.
    if not long_trousers:
        for limb in order:
            hip, knee = j[f"{limb}_hip"], j[f"{limb}_knee"]
            end = hip + (knee - hip) * 0.72
            painter.limb(hip, end, 0.115 * w, shade(bottom, limb), shading=0.85)
            outer = np.sign(hip[0] - j["hip"][0]) or 1.0
            if not side:
                offset = np.array([outer * 0.045 * w, 0.0])
                painter.limb(hip + offset, end + offset, 0.014 * w, person.kit.trim)
        painter.polygon(_quad(j["l_hip"], j["r_hip"], -0.025, 0.08, w, side), bottom, shading=0.85)
    elif role == "coach":
        painter.polygon(_quad(j["l_hip"], j["r_hip"], -0.02, 0.05, w, side), bottom)

    # Far arm behind the body in a side view.
    def arm(limb: str) -> None:
        shoulder, elbow, wrist = j[f"{limb}_shoulder"], j[f"{limb}_elbow"], j[f"{limb}_wrist"]
        skin = shade(person.skin, limb)
        if role == "coach":
            painter.limb(shoulder, elbow, 0.05 * w, shade(sleeves, limb))
            painter.limb(elbow, wrist, 0.045 * w, shade(sleeves, limb))
            painter.ellipse(wrist + (wrist - elbow) * 0.2, 0.022, 0.026, skin)
            return
        painter.limb(shoulder, elbow, 0.05 * w, skin)
        painter.limb(elbow, wrist, 0.041 * w, skin)
        painter.ellipse(wrist + (wrist - elbow) * 0.2, 0.022, 0.026, skin)
        if sleeves is not None:
            painter.limb(shoulder, shoulder + (elbow - shoulder) * 0.5, 0.056 * w, shade(sleeves, limb))
        sleeve_limb = "r" if person.sleeve_side > 0 else "l"
        if person.arm_sleeve is not None and limb == sleeve_limb:
            painter.limb(shoulder + (elbow - shoulder) * 0.3, wrist, 0.044 * w, shade(person.arm_sleeve, limb))

    if side:
        arm(order[0])

    # Shirt / jersey / jacket.
    torso = _torso(j, w, side, sleeveless=role in ("team_a", "team_b"))
    painter.polygon(torso, top, shading=0.84)
    if role == "referee" and court.referee_stripes:
        for t in np.linspace(-0.7, 0.7, 6):
            a = j["neck"] + (j["r_shoulder"] - j["neck"]) * t
            b = j["hip"] + (j["r_hip"] - j["hip"]) * t * 1.1
            painter.limb(a + np.array([0, 0.01]), b, 0.012 * w, (20, 20, 20))
    if role in ("team_a", "team_b"):
        _jersey_trim(painter, person, j, w, facing)
    if role == "coach" and facing != "back":
        shirt = [j["neck"] + np.array([-0.025 * w, -0.005]), j["neck"] + np.array([0.025 * w, -0.005]),
                 j["neck"] + (j["hip"] - j["neck"]) * 0.45]
        painter.polygon(shirt, (235, 235, 235))
        painter.limb(j["neck"] + (j["hip"] - j["neck"]) * 0.05, j["neck"] + (j["hip"] - j["neck"]) * 0.4, 0.014, person.tie)
    if person.number >= 0 and role != "coach":
        _number(painter, person, j, facing)

    # Arms in front (both in a front/back view, the near one in a side view).
    for limb in order[1:] if side else order:
        arm(limb)

    _head(painter, person, j, facing, w)


def _quad(l_hip, r_hip, top: float, depth: float, w: float, side: bool) -> list[np.ndarray]:
    pad = np.array([0.03 * w * (0.5 if side else 1.0), 0.0])
    left, right = (l_hip, r_hip) if l_hip[0] < r_hip[0] else (r_hip, l_hip)
    return [left - pad + np.array([0, top]), right + pad + np.array([0, top]),
            right + pad + np.array([0, depth]), left - pad + np.array([0, depth])]


def _torso(j: dict[str, np.ndarray], w: float, side: bool, sleeveless: bool) -> list[np.ndarray]:
    neck, hip = j["neck"], j["hip"]
    rs, ls, rh, lh = j["r_shoulder"], j["l_shoulder"], j["r_hip"], j["l_hip"]
    spine = (neck - hip) / np.linalg.norm(neck - hip)
    chest = 0.2 if side else 0.0
    down = -spine
    strap = 0.72 if sleeveless else 1.0
    return [
        neck + (ls - neck) * strap + down * 0.005, neck + spine * 0.012 + (ls - neck) * 0.35,
        neck + spine * 0.012 + (rs - neck) * 0.35, neck + (rs - neck) * strap + down * 0.005,
        rs + down * 0.11 + (rs - neck) * (-0.08 + chest), rh + down * 0.02 + (rh - hip) * 0.3,
        lh + down * 0.02 + (lh - hip) * 0.3, ls + down * 0.11 + (ls - neck) * (-0.08 + chest),
    ]


def _jersey_trim(painter: _Painter, person: Person, j: dict[str, np.ndarray], w: float, facing: str) -> None:
    trim = person.kit.trim
    neck = j["neck"]
    spine = (neck - j["hip"]) / np.linalg.norm(neck - j["hip"])
    if facing == "front":
        depth = 0.06
        v = [neck + (j["l_shoulder"] - neck) * 0.33 + spine * 0.012, neck - spine * depth,
             neck + (j["r_shoulder"] - neck) * 0.33 + spine * 0.012]
        painter.polygon(v, trim)
        inner = [neck + (j["l_shoulder"] - neck) * 0.22 + spine * 0.012, neck - spine * (depth - 0.018),
                 neck + (j["r_shoulder"] - neck) * 0.22 + spine * 0.012]
        painter.polygon(inner, person.skin)
    elif facing == "back":
        painter.chord(neck + spine * 0.01, 0.035 * w, 0.02, 0, 180, trim)
    for limb in ("l", "r"):
        shoulder = j[f"{limb}_shoulder"]
        strap = neck + (shoulder - neck) * 0.72
        painter.limb(strap - spine * 0.005, strap - spine * 0.1 + (shoulder - neck) * 0.1, 0.012 * w, trim, shading=1.0)


def _number(painter: _Painter, person: Person, j: dict[str, np.ndarray], facing: str) -> None:
    neck, hip = j["neck"], j["hip"]
    label = str(person.number)
    if person.role == "referee":
        if facing != "back":
            return
        centre, height, colour = neck + (hip - neck) * 0.3, 0.06, (20, 20, 20)
    elif facing == "back":
        centre, height, colour = neck + (hip - neck) * 0.45, 0.12, person.kit.number
    elif facing == "front":
        centre, height, colour = neck + (hip - neck) * 0.5, 0.09, person.kit.number
    else:
        centre = neck + (hip - neck) * 0.5 + np.array([0.01 if facing == "right" else -0.01, 0])
        height, colour = 0.085, person.kit.number
    painter.text(centre, label, height, colour, squash=0.45 if facing in ("left", "right") else 1.0)


def _shoe(painter: _Painter, ankle: np.ndarray, facing: str, colour: RGB, trim: RGB) -> None:
    sole = ankle + np.array([0.0, 0.025])
    if facing in ("left", "right"):
        d = 1.0 if facing == "right" else -1.0
        painter.ellipse(sole + np.array([d * 0.03, 0.0]), 0.055, 0.024, colour)
        painter.limb(sole + np.array([-d * 0.02, 0.016]), sole + np.array([d * 0.08, 0.016]), 0.008, trim)
    else:
        painter.ellipse(sole, 0.033, 0.026, colour)
        painter.limb(sole + np.array([-0.025, 0.018]), sole + np.array([0.025, 0.018]), 0.008, trim)


def _head(painter: _Painter, person: Person, j: dict[str, np.ndarray], facing: str, w: float) -> None:
    head, neck = j["head"], j["neck"]
    rx, ry = 0.046 + 0.006 * w, 0.058
    painter.limb(neck + np.array([0, 0.01]), head, 0.04 * w, _shade(person.skin, 0.9))
    painter.ellipse(head, rx, ry, person.skin)
    style, hair = person.hair_style, person.hair
    top = head + np.array([0.0, -0.004])
    if style == "afro":
        painter.ellipse(head + np.array([0, -0.03]), rx * 1.35, ry * 1.05, hair)
        if facing == "front":
            painter.ellipse(head + np.array([0, 0.018]), rx * 0.92, ry * 0.7, person.skin)
    elif style == "long":
        painter.ellipse(head + np.array([0, -0.01]), rx * 1.12, ry * 1.05, hair)
        painter.polygon([head + np.array([-rx * 1.1, 0]), head + np.array([rx * 1.1, 0]),
                         head + np.array([rx * 0.9, ry * 1.5]), head + np.array([-rx * 0.9, ry * 1.5])], hair)
        if facing == "front":
            painter.ellipse(head + np.array([0, 0.012]), rx * 0.85, ry * 0.8, person.skin)
    elif style == "bun":
        painter.chord(top, rx * 1.04, ry * 1.04, 180, 360, hair)
        painter.ellipse(head + np.array([0, -ry * 1.05]), rx * 0.5, ry * 0.4, hair)
    elif style in ("short", "curly"):
        painter.chord(top + np.array([0, -0.004]), rx * 1.06, ry * (1.12 if style == "curly" else 1.02), 170, 370, hair)
    elif style == "buzz":
        painter.chord(top, rx * 1.0, ry * 1.0, 185, 355, _shade(hair, 1.25) if sum(hair) < 200 else hair)
    if facing == "back" and style != "bald":
        painter.ellipse(head + np.array([0, 0.005]), rx * 0.98, ry * 0.85, hair if style != "buzz" else _shade(person.skin, 0.8))
    if person.beard and facing != "back":
        painter.chord(head + np.array([0, 0.01]), rx * 0.9, ry * 0.9, 20, 160, _shade(person.hair, 1.0))
    if person.headband is not None:
        painter.limb(head + np.array([-rx, -0.022]), head + np.array([rx, -0.022]), 0.014, person.headband)
    if facing == "front":
        for dx in (-0.018, 0.018):
            painter.ellipse(head + np.array([dx, -0.004]), 0.006, 0.005, (25, 20, 20))
    elif facing in ("left", "right"):
        d = 1.0 if facing == "right" else -1.0
        painter.ellipse(head + np.array([d * rx * 0.85, 0.008]), 0.012, 0.01, _shade(person.skin, 0.92))
        painter.ellipse(head + np.array([d * 0.028, -0.004]), 0.005, 0.005, (25, 20, 20))


def draw_court(image: Image.Image, painter: _Painter, court: Court, rng: np.random.Generator) -> None:
    """Floor boards, court lines, painted area; sometimes the advertising boards and stands behind."""
    draw = painter.draw
    width, height = image.size
    draw.rectangle([0, 0, width, height], fill=court.floor)
    # Floor boards: bands across the image at the sequence's angle, each a little lighter or darker.
    spacing = max(2.0, court.plank_width * painter.scale)
    angle = court.plank_angle + rng.normal(0, 0.05)
    normal = np.array([-math.sin(angle), math.cos(angle)])
    extent = abs(width * normal[0]) + abs(height * normal[1])
    phase = rng.uniform(0, spacing)
    centre = np.array([width / 2, height / 2])
    tangent = np.array([math.cos(angle), math.sin(angle)]) * (width + height)
    for k, offset in enumerate(np.arange(-extent / 2 - spacing + phase, extent / 2 + spacing, spacing)):
        tint = 1.0 + rng.normal(0, 0.035)
        a = centre + normal * offset
        b = a + normal * spacing
        draw.polygon([tuple(a - tangent), tuple(a + tangent), tuple(b + tangent), tuple(b - tangent)], fill=_shade(court.floor, tint))
    if rng.random() < 0.3:  # the painted key
        cut = rng.uniform(0.2, 0.8) * width
        slope = rng.uniform(-0.4, 0.4) * height
        poly = [(cut, 0), (width, 0), (width, height), (cut + slope, height)] if rng.random() < 0.5 else \
            [(0, 0), (cut, 0), (cut + slope, height), (0, height)]
        draw.polygon(poly, fill=_shade(court.paint, rng.uniform(0.85, 1.05)))
    if rng.random() < 0.45:  # a court line
        y = rng.uniform(0.3, 1.0) * height
        tilt = rng.uniform(-0.5, 0.5) * height
        draw.line([(0, y), (width, y + tilt)], fill=court.line, width=max(1, round(0.025 * painter.scale)))
    if rng.random() < 0.15:  # a sideline line running up the image
        x = rng.uniform(0, width)
        draw.line([(x, 0), (x + rng.uniform(-0.3, 0.3) * width, height)], fill=court.line, width=max(1, round(0.022 * painter.scale)))


def draw_stands(image: Image.Image, painter: _Painter, court: Court, bottom: float, rng: np.random.Generator) -> None:
    """An advertising board and crowd above ``bottom`` (pixels), for people near the far sideline."""
    width = image.width
    board_h = 0.12 * painter.scale
    draw = painter.draw
    draw.rectangle([0, 0, width, bottom], fill=(40, 38, 45))
    crowd_h = int(bottom - board_h)
    if crowd_h > 0:
        # Spectators: blobs a head or so across, muted colours, darker further up.
        cell = max(2.0, 0.06 * painter.scale)
        rows, cols = max(1, math.ceil(crowd_h / cell)), max(1, math.ceil(width / cell))
        grey = rng.uniform(30, 120, size=(rows, cols, 1))
        colour = rng.uniform(20, 200, size=(rows, cols, 3))
        crowd = (0.7 * grey + 0.3 * colour).astype(np.float32)
        crowd *= np.linspace(0.6, 1.0, rows, dtype=np.float32)[:, None, None]
        crowd = Image.fromarray(crowd.astype(np.uint8)).resize((width, crowd_h), Image.Resampling.BILINEAR)
        image.paste(crowd, (0, 0))
    draw.rectangle([0, bottom - board_h, width, bottom], fill=court.board)
    x = rng.uniform(-20, 5)
    while x < width:
        w = rng.uniform(0.05, 0.2) * painter.scale
        draw.rectangle([x, bottom - board_h * 0.72, x + w, bottom - board_h * 0.28], fill=(245, 245, 245) if sum(court.board) < 380 else (20, 20, 20))
        x += w + rng.uniform(0.02, 0.08) * painter.scale


# ----------------------------------------------------------------------------------------------------
# One crop
# ----------------------------------------------------------------------------------------------------

MIN_HEIGHT, MAX_HEIGHT = 40, 250
SUPERSAMPLE = 2


def render_crop(seed: int, people: dict[int, Person], court: Court, player: int, frame: int) -> Image.Image:
    """Draw one detection-like crop of ``player`` in ``frame``: an RGB image 40-250 px tall.

    Randomness comes from (seed, player, frame) only, so a crop is the same whoever draws it.
    """
    rng = np.random.default_rng([seed, 4, player, frame])
    person = people[player]
    pose = sample_pose(person, rng)
    x0, y0, x1, y1 = pose_bounds(person, pose)

    # The detector's box: margins, a jitter, and sometimes a cut-off edge.
    box = np.array([x0 - rng.uniform(0.0, 0.06), y0 - rng.uniform(0.0, 0.05),
                    x1 + rng.uniform(0.0, 0.06), y1 + rng.uniform(-0.01, 0.04)])
    box[[0, 2]] += rng.normal(0, 0.02)
    if rng.random() < 0.15:
        cut = str(rng.choice(["bottom", "top", "left", "right"], p=[0.45, 0.15, 0.2, 0.2]))
        span_x, span_y = box[2] - box[0], box[3] - box[1]
        if cut == "bottom":
            box[3] -= rng.uniform(0.1, 0.35) * span_y
        elif cut == "top":
            box[1] += rng.uniform(0.05, 0.15) * span_y
        elif cut == "left":
            box[0] += rng.uniform(0.15, 0.35) * span_x
        else:
            box[2] -= rng.uniform(0.15, 0.35) * span_x
    box_w, box_h = box[2] - box[0], box[3] - box[1]

    # Size: the person's usual distance to the camera, changing a little frame to frame.
    target_h = float(np.clip(person.base_height * math.exp(rng.normal(0, 0.15)), MIN_HEIGHT, MAX_HEIGHT))
    out_h = round(target_h)
    scale = out_h / box_h
    out_w = max(12, round(box_w * scale))
    canvas = Image.new("RGB", (out_w * SUPERSAMPLE, out_h * SUPERSAMPLE))
    draw = ImageDraw.Draw(canvas)
    painter = _Painter(draw, origin=-box[:2] * scale * SUPERSAMPLE, scale=scale * SUPERSAMPLE)

    draw_court(canvas, painter, court, rng)
    if rng.random() < 0.12:
        horizon = painter.px((0.0, y0 + rng.uniform(0.15, 0.45)))[1]
        if horizon > 4:
            draw_stands(canvas, painter, court, horizon, rng)

    # Another person behind or in front (same sequence), partly overlapping.
    occluder = None
    others = [p for p in people if p != player]
    if others and rng.random() < 0.35:
        other = people[others[int(rng.integers(len(others)))]]
        in_front = bool(rng.random() < 0.5)
        side = rng.choice([-1.0, 1.0])
        offset = np.array([side * rng.uniform(0.22, 0.5) * (box_w + 0.1), rng.uniform(0.02, 0.12) * (1 if in_front else -1)])
        size = rng.uniform(1.0, 1.2) if in_front else rng.uniform(0.8, 0.98)
        occluder = (other, sample_pose(other, rng), offset, size, in_front)
        if not in_front:
            _draw_scaled(painter, occluder, court)
    draw_person(painter, person, pose, court)
    if occluder is not None and occluder[4]:
        _draw_scaled(painter, occluder, court)

    image = canvas.resize((out_w, out_h), Image.Resampling.LANCZOS)
    softness = rng.uniform(0.0, 1.1)
    if softness > 0.3:  # detections upscaled from few pixels, focus, compression: broadcast softness
        image = image.filter(ImageFilter.GaussianBlur(softness))
    return _camera(image, court, rng)


def _draw_scaled(painter: _Painter, occluder, court: Court) -> None:
    other, pose, offset, size, _ = occluder
    sub = _Painter(painter.draw, painter.origin + painter.scale * offset, painter.scale * size)
    draw_person(sub, other, pose, court)


def _camera(image: Image.Image, court: Court, rng: np.random.Generator) -> Image.Image:
    """Motion blur, lighting and colour cast, sensor noise: what the broadcast camera adds."""
    pixels = np.asarray(image, dtype=np.float32)
    if rng.random() < 0.35:
        length = int(rng.integers(2, max(3, pixels.shape[0] // 14)))
        angle = rng.normal(0, 0.35) + (math.pi / 2 if rng.random() < 0.2 else 0.0)
        pixels = _motion_blur(pixels, length, angle)
    brightness = rng.uniform(0.7, 1.25)
    contrast = rng.uniform(0.75, 1.15)
    mean = pixels.mean()
    pixels = (pixels - mean) * contrast + mean
    pixels *= np.asarray(court.gains, dtype=np.float32) * brightness * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    if rng.random() < 0.3:  # a light gradient across the box (spotlights, shade)
        ramp = np.linspace(rng.uniform(0.8, 1.0), rng.uniform(1.0, 1.2), pixels.shape[0], dtype=np.float32)
        pixels *= ramp[:, None, None]
    pixels += rng.normal(0, rng.uniform(1.5, 5.0), pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _motion_blur(pixels: np.ndarray, length: int, angle: float) -> np.ndarray:
    """Average of ``length`` copies shifted along ``angle`` (H, W, 3) float32 -> same shape."""
    pad = length
    padded = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    out = np.zeros_like(pixels)
    h, w = pixels.shape[:2]
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, length):
        dx, dy = int(round(t * math.cos(angle))), int(round(t * math.sin(angle)))
        out += padded[pad + dy: pad + dy + h, pad + dx: pad + dx + w]
    return out / length


def encode_jpeg(image: Image.Image, rng: np.random.Generator) -> bytes:
    """JPEG bytes at a quality between 70 and 95 (deterministic for a given rng state)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(70, 96)))
    return buffer.getvalue()
