"""The HTML reports in a real headless browser (Chromium + chromedriver from the system, driven by Selenium): the page
loads offline without a console error, the slider, the arrow keys and the overlay toggle show what they should,
the tables show hand-computed values, names are escaped, the index links resolve, a screenshot is not blank."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from reports.html import ENFACE_WIDTH, _ranges, _sig, main, start_chrome, write_index, write_patient_report

Z, H, W = 6, 64, 96
SPACING = (0.047, 0.0039, 0.0117)  # mm; a voxel is 0.047 * 0.0039 * 0.0117 mm^3 = 2.14461e-3 nL
NAMES = ("REA", "SRF", "PED")


def volume() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slice k (1-based) has mean grey 10 + 30 k; REA (10 x 20 px) on slices 2-4, SRF (5 x 8 px) on 1, 3, 4 and 6,
    no PED. Slice 3 is the first with the most lesion, where the page opens."""
    image = np.empty((Z, H, W), np.uint8)
    for z in range(Z):
        image[z] = 40 + 30 * z + (np.arange(W) % 16)[None, :] - 8  # a texture, so the JPEG has something to keep
    labels = np.zeros((Z, H, W), np.uint8)
    labels[1:4, 20:30, 10:30] = 1
    labels[[0, 2, 3, 5], 40:45, 50:58] = 2
    det = np.array(
        [[0.1, 0.9, 0.0], [0.9, 0.1, 0.0], [0.95, 0.8, 0.1], [0.9, 0.85, 0.0], [0.2, 0.05, 0.0], [0.05, 0.7, 0.0]]
    )
    return image, labels, det


def quant(labels: np.ndarray, spacing: tuple[float, float, float] | None) -> dict:
    """The quantification of ``volume()`` as the lead's code writes it, by hand."""
    nl = None
    if spacing is not None:
        voxel_nl = spacing[0] * spacing[1] * spacing[2] * 1000
        nl = {"REA": 600 * voxel_nl, "SRF": 160 * voxel_nl, "PED": 0.0}
    dy = 1.0 if spacing is None else spacing[1]
    return {
        "spacing": spacing,
        "volume_nl": nl,
        "voxels": {"REA": 600, "SRF": 160, "PED": 0},
        "affected_bscans": {"REA": [2, 3, 4], "SRF": [1, 3, 4, 6], "PED": []},
        "enface": {n: ((labels == c + 1).sum(axis=1) * dy).astype(np.float32) for c, n in enumerate(NAMES)},
        "enface_unit": "voxels" if spacing is None else "mm",
    }


def decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/"), uri[:40]
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def slice_data(page: Path) -> str:
    return re.search(r'id="slice-data">(.*?)</script>', page.read_text(), re.S).group(1)


def severe(driver) -> list[dict]:
    """The console's errors since the last call (reading the log empties it)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def load(driver, page: Path) -> None:
    severe(driver)
    driver.get(page.resolve().as_uri())


def show_slice(driver, k: int) -> None:
    driver.execute_script(
        "const s = document.getElementById('slider'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input', {bubbles: true}));",
        k,
    )


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def table(driver) -> list[list[str]]:
    """The cells of the ``#volumes`` table's body, row by row."""
    rows = driver.find_elements(By.CSS_SELECTOR, "#volumes tbody tr")
    return [[td.text for td in r.find_elements(By.TAG_NAME, "td")] for r in rows]


@pytest.fixture(scope="module")
def browser():
    driver = start_chrome()  # no Chromium or chromedriver: a RuntimeError saying how to install them (fails, not skips)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("report")
    image, labels, det = volume()
    return {
        "known": write_patient_report(folder / "P01.html", "P01", image, labels, det, quant(labels, SPACING)),
        "unknown": write_patient_report(folder / "P02.html", "P02", image, labels, None, quant(labels, None)),
    }


def test_page_is_self_contained_and_loads_without_errors(browser, pages):
    source = pages["known"].read_text()
    assert "http://" not in source and "https://" not in source  # no src/href/url() that could leave the page
    assert "<link" not in source and "<script src" not in source and "@import" not in source
    load(browser, pages["known"])
    assert severe(browser) == []
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert [r for r in resources if not r.startswith("data:")] == []
    assert browser.title == "P01 - OCT fluid report"
    assert text(browser, "patient") == "P01"
    assert "0.047 mm between B-scans, 0.0039 mm along depth, 0.0117 mm between A-scans" in text(browser, "spacing")
    assert "not a diagnosis" in browser.find_element(By.CLASS_NAME, "note").text


def test_slider_shows_the_chosen_slice(browser, pages):
    image, labels, _ = volume()
    load(browser, pages["known"])
    assert text(browser, "slice-label") == "slice 3 / 6"  # the slice with the most lesion
    marker = browser.find_element(By.ID, "det-marker")
    x0, dx = float(marker.get_attribute("data-x0")), float(marker.get_attribute("data-dx"))
    for k in (5, 1, 6):
        show_slice(browser, k)
        assert text(browser, "slice-label") == f"slice {k} / 6"
        shown = np.asarray(decode(browser.find_element(By.ID, "bscan").get_attribute("src")), np.float32)
        errors = [np.abs(shown - image[z]).mean() for z in range(Z)]
        assert int(np.argmin(errors)) == k - 1 and errors[k - 1] < 3, errors
        alpha = np.asarray(decode(browser.find_element(By.ID, "overlay").get_attribute("src")).convert("RGBA"))[..., 3]
        np.testing.assert_array_equal(alpha > 0, labels[k - 1] > 0)
        assert float(marker.get_attribute("x1")) == pytest.approx(x0 + (k - 1) * dx)
    assert text(browser, "det-values") == "REA 0.05 · SRF 0.70 · PED 0.00"
    assert severe(browser) == []


def test_arrow_keys_step_and_stop_at_the_ends(browser, pages):
    load(browser, pages["known"])
    show_slice(browser, 5)
    keys = ActionChains(browser)
    for key, expected in ((Keys.ARROW_RIGHT, 6), (Keys.ARROW_RIGHT, 6), (Keys.ARROW_LEFT, 5), (Keys.ARROW_LEFT, 4)):
        keys.send_keys(key).perform()
        assert text(browser, "slice-label") == f"slice {expected} / 6"
    browser.execute_script("document.getElementById('slider').focus()")  # the slider steps itself: once, not twice
    keys.send_keys(Keys.ARROW_LEFT).perform()
    assert text(browser, "slice-label") == "slice 3 / 6"


def test_toggle_hides_and_shows_the_overlay(browser, pages):
    load(browser, pages["known"])
    overlay, toggle = browser.find_element(By.ID, "overlay"), browser.find_element(By.ID, "overlay-toggle")
    assert overlay.is_displayed() and toggle.is_selected()
    toggle.click()
    assert not overlay.is_displayed()
    toggle.click()
    assert overlay.is_displayed()


def test_volumes_table_shows_the_hand_computed_values(browser, pages):
    load(browser, pages["known"])
    # 600 and 160 voxels of 2.14461e-3 nL: 1.2868 and 0.34314 nL
    assert table(browser) == [
        ["REA", "1.29", "600", "3", "2-4"],
        ["SRF", "0.343", "160", "4", "1, 3-4, 6"],
        ["PED", "0", "0", "0", "none"],
    ]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#enface img.enface-map")) == 3


def test_unknown_spacing_and_no_detection_scores(browser, pages):
    load(browser, pages["unknown"])
    assert [row[1] for row in table(browser)] == ["unknown (no spacing)"] * 3
    assert "unknown" in text(browser, "spacing")
    assert browser.find_elements(By.ID, "det-plot") == []
    show_slice(browser, 2)  # the script copes without a plot
    assert text(browser, "slice-label") == "slice 2 / 6"
    # square voxels: 6 B-scans x 96 A-scans, 16 times wider than high
    box = browser.find_element(By.CSS_SELECTOR, "#enface img.enface-map").rect
    assert (box["width"], box["height"]) == (ENFACE_WIDTH, ENFACE_WIDTH / 16)
    assert severe(browser) == []


def test_enface_map_of_a_square_scan_is_square(browser, tmp_path):
    """A 6 x 6 mm cube of 128 B-scans x 512 A-scans: 6/128 mm between B-scans, 6/512 between A-scans."""
    z, h, w = 128, 4, 512
    labels = np.zeros((z, h, w), np.uint8)
    labels[40:60, 1:3, 100:300] = 2
    q = {
        "spacing": (6 / 128, 0.002, 6 / 512),
        "volume_nl": {n: 0.0 for n in NAMES},
        "voxels": {n: 0 for n in NAMES},
        "affected_bscans": {n: [] for n in NAMES},
        "enface": {n: ((labels == c + 1).sum(axis=1) * 0.002).astype(np.float32) for c, n in enumerate(NAMES)},
        "enface_unit": "mm",
    }
    page = write_patient_report(tmp_path / "cube.html", "cube", np.zeros((z, h, w), np.uint8), labels, None, q)
    load(browser, page)
    for img in browser.find_elements(By.CSS_SELECTOR, "#enface img.enface-map"):
        assert img.rect["width"] == img.rect["height"] == ENFACE_WIDTH
    assert "6.00 mm (A-scans) × 6.00 mm (B-scans), to scale" in browser.find_element(By.TAG_NAME, "body").text


def test_patient_name_is_escaped(browser, tmp_path):
    name = '<script>alert("x")</script><img src=x onerror="alert(1)"> & Co'
    image, labels, det = volume()
    page = write_patient_report(tmp_path / "odd.html", name, image, labels, det, quant(labels, SPACING))
    source = page.read_text()
    assert "<script>alert" not in source and "<img src=x" not in source
    load(browser, page)
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
    assert text(browser, "patient") == name
    assert browser.title == f"{name} - OCT fluid report"
    assert severe(browser) == []


def test_index_links_to_the_reports(browser, tmp_path):
    image, labels, det = volume()
    name = "P 01 #1"  # a space and a '#': the link must be percent-encoded
    write_patient_report(tmp_path / "reports" / f"{name}.html", name, image, labels, det, quant(labels, SPACING))
    rows = [
        {"name": name, "report": f"reports/{name}.html", "volume_nl": quant(labels, SPACING)["volume_nl"], "slices": Z},
        {"name": "<b>P02</b>", "report": "reports/P02.html", "volume_nl": None, "slices": 49},
    ]
    index = write_index(tmp_path / "index.html", rows, title="Clinic <A>")
    load(browser, index)
    assert browser.title == "Clinic <A>"
    assert table(browser) == [
        [name, "6", "1.29", "0.343", "0", "n/a"],
        ["<b>P02</b>", "49", *["unknown (no spacing)"] * 3, "n/a"],
        ["Total (1 with a spacing; 1 without, not counted)", "55", "1.29", "0.343", "0", ""],
    ]
    assert severe(browser) == []
    browser.find_element(By.LINK_TEXT, name).click()
    WebDriverWait(browser, 5).until(lambda d: d.find_elements(By.ID, "patient"))
    assert text(browser, "patient") == name
    assert text(browser, "slice-label") == "slice 3 / 6"


def test_screenshot_is_not_blank(pages, tmp_path):
    png = tmp_path / "shot.png"
    main(["screenshot", str(pages["known"]), str(png), "--width", "1000", "--height", "700"])
    shot = Image.open(png).convert("RGB")
    assert shot.size == (1000, 700)
    assert len(shot.getcolors(1 << 24)) > 100  # text, the B-scan, the overlay's colours


def test_wide_bscans_are_downscaled_to_512_px(tmp_path):
    image = np.full((2, 40, 1024), 100, np.uint8)
    labels = np.zeros_like(image)
    labels[1, 10:20, 0:400] = 3
    q = quant(np.zeros((2, 40, 1024), np.uint8), None) | {"enface": {n: np.zeros((2, 1024), np.float32) for n in NAMES}}
    page = write_patient_report(tmp_path / "wide.html", "wide", image, labels, None, q)
    uris = re.findall(r'"(data:image/[^"]+)"', slice_data(page))
    assert len(uris) == 6  # 2 B-scans, 2 overlays, 2 outlines
    assert {decode(u).size for u in uris} == {(512, 20)}
    assert "stored at 512 × 20 px of 1024 × 40" in page.read_text().replace("&times;", "×")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1234.5, "1230"),
        (0.012345, "0.0123"),
        (1.2, "1.20"),
        (0, "0"),
        (999.6, "1000"),
        (0.9996, "1.00"),
        (float("nan"), "n/a"),
    ],
)
def test_three_significant_digits(value, expected):
    assert _sig(value) == expected


@pytest.mark.parametrize(
    ("slices", "expected"),
    [([3, 4, 5, 6, 7, 12], "3-7, 12"), ([12, 3, 5, 4], "3-5, 12"), ([1], "1"), ([], "none"), ([2, 2, 4], "2, 4")],
)
def test_affected_bscans_as_ranges(slices, expected):
    assert _ranges(slices) == expected


def test_bad_inputs_are_refused(tmp_path):
    image, labels, det = volume()
    q = quant(labels, SPACING)
    with pytest.raises(ValueError, match="labels"):
        write_patient_report(tmp_path / "a.html", "a", image, labels[:, :10], det, q)
    with pytest.raises(ValueError, match="uint8"):
        write_patient_report(tmp_path / "a.html", "a", image.astype(np.float32), labels, det, q)
    with pytest.raises(ValueError, match="class 4"):
        write_patient_report(tmp_path / "a.html", "a", image, labels + 2, det, q)  # SRF (2) becomes 4
    with pytest.raises(ValueError, match="det"):
        write_patient_report(tmp_path / "a.html", "a", image, labels, det[:, :2], q)
    assert not (tmp_path / "a.html").exists()


def test_a_one_pixel_lesion_stays_visible_in_the_gif(tmp_path):
    """The GIF halved its frames by interpolation and quantised each to 64 colours of its own: on a demo volume 1,824
    strongly coloured overlay pixels of the PNGs became 0 in the GIF (issue 24, item 5)."""
    from PIL import Image

    from data.oct import CLASS_COLOURS
    from tasks.oct import save_volume_pictures

    rng = np.random.default_rng(0)
    volume = rng.integers(0, 256, (3, 41, 30), dtype=np.uint8)  # noise: many greys for a palette to spend on
    pred = np.zeros_like(volume)
    pred[1, 20, 13] = 1  # one REA pixel
    pred[2, 7, 5] = 3  # one PED pixel
    gif = save_volume_pictures(tmp_path, "P1", volume, pred, None)
    frames = []
    with Image.open(gif) as im:
        for z in range(im.n_frames):
            im.seek(z)
            frames.append(np.asarray(im.convert("RGB")).astype(int))
    assert frames[0].shape[0] == 21  # halved, rounded up: 41 x 30 -> 21 x 15, B-scan | overlay

    def tinted(frame, k):
        """Pixels of the overlay half whose colour is class k's tint (far from grey, towards its colour)."""
        over = frame[:, -15:]
        tint = CLASS_COLOURS[k] - CLASS_COLOURS[k].mean()
        return ((over - over.mean(axis=2, keepdims=True)) @ tint / (tint @ tint) > 0.3).sum()

    assert tinted(frames[0], 1) == tinted(frames[0], 3) == 0
    assert tinted(frames[1], 1) == 1 and tinted(frames[2], 3) == 1
    # odd sizes: a lesion in the last row or column is padded into a block, not cut off
    pred = np.zeros_like(volume)
    pred[0, 40, 3], pred[1, 9, 29] = 2, 2
    gif = save_volume_pictures(tmp_path, "P2", volume, pred, None)
    with Image.open(gif) as im:
        firsts = []
        for z in range(2):
            im.seek(z)
            firsts.append(np.asarray(im.convert("RGB")).astype(int))
    assert firsts[0].shape[0] == 21 and tinted(firsts[0], 2) == 1 and tinted(firsts[1], 2) == 1


def test_index_sorts_by_a_column_and_keeps_the_totals_last(browser, tmp_path):
    rows = [
        {
            "name": f"P{i}",
            "report": f"P{i}.html",
            "volume_nl": {"REA": v, "SRF": 1.0, "PED": 0.0},
            "slices": 10,
            "cst_um": c,
        }
        for i, v, c in ((1, 5.0, 300.0), (2, 50.0, 410.5), (3, 0.5, None))
    ]
    load(browser, write_index(tmp_path / "index.html", rows))
    heads = browser.find_elements(By.CSS_SELECTOR, "#volumes th.sortable")
    rea = heads[2]
    rea.click()  # ascending: 0.5, 5, 50
    assert [r[0] for r in table(browser)] == ["P3", "P1", "P2", "Total (3 with a spacing)"]
    rea.click()  # descending
    assert [r[0] for r in table(browser)] == ["P2", "P1", "P3", "Total (3 with a spacing)"]
    assert table(browser)[-1][2:5] == ["55.5", "3.00", "0"]  # 5 + 50 + 0.5 nL, 3 x 1 nL
    heads[-1].click()  # CST: a missing one sorts apart from the numbers, and nothing breaks
    assert table(browser)[-1][0].startswith("Total") and severe(browser) == []


# the grid's tests: volume()'s 6 B-scans x 96 A-scans spread over 1.5 x 6 mm, so the 1 mm central subfield is covered
GRID_SPACING = (0.25, 0.0039, 0.0625)


def grid_quant(labels: np.ndarray, laterality: str | None, order: str | None) -> dict:
    from metrics.etdrs import etdrs

    q = quant(labels, SPACING) | {"spacing": GRID_SPACING}
    thickness = np.full((Z, W), 300.0, np.float32)
    q.update(
        scan={
            "laterality": laterality,
            "date": "2016-07-25T12:45:50",
            "device": "Zeiss <Cirrus>",
            "bscan_order": order,
        },
        thickness_um=thickness,
        etdrs=etdrs(labels, thickness, GRID_SPACING, NAMES, laterality, order),
    )
    return q


def test_page_shows_the_scan_the_model_the_grid_and_orientation_labels(browser, tmp_path):
    image, labels, det = volume()
    model = {"checkpoints": [{"file": "oct_unet.pth.tar", "sha256": "ab" * 32}], "toolkit": "retina-lesion 0.1.0"}
    page = write_patient_report(
        tmp_path / "P.html", "P", image, labels, det, grid_quant(labels, "OD", "superior-first"), model=model
    )
    load(browser, page)
    assert text(browser, "laterality") == "right (OD)"
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "2016-07-25T12:45:50" in body and "Zeiss <Cirrus>" in body and "superior first (from the file)" in body
    assert "oct_unet.pth.tar" in text(browser, "model") and "abababababab" in text(browser, "model")
    labels_shown = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".orient")}
    assert labels_shown == {"superior", "inferior", "nasal", "temporal"}
    assert "Central subfield thickness: 300" in text(browser, "cst")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#etdrs tbody tr")) == 9
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.grid")) == 4  # 3 lesion maps and the thickness map
    # nothing said: no anatomical labels at all
    page = write_patient_report(tmp_path / "Q.html", "Q", image, labels, det, grid_quant(labels, None, None))
    load(browser, page)
    assert browser.find_elements(By.CSS_SELECTOR, ".orient") == []
    assert "the order is as stored" in browser.find_element(By.TAG_NAME, "body").text
    assert severe(browser) == []


def test_bscan_at_physical_aspect_with_a_scale_bar(browser, pages):
    load(browser, pages["known"])
    shown = browser.find_element(By.ID, "bscan").rect
    # 64 rows x 0.0039 mm over 96 columns x 0.0117 mm: 0.2496 / 1.1232 = 0.222 as high as wide
    assert shown["height"] / shown["width"] == pytest.approx(64 * 0.0039 / (96 * 0.0117), abs=0.01)
    bar = browser.find_element(By.CSS_SELECTOR, "#scale-bar .scalebar").rect["width"]
    label = browser.find_element(By.ID, "scale-bar").text
    mm = float(label.split()[0]) / (1000 if "\u00b5m" in label else 1)
    assert bar == pytest.approx(mm / (96 * 0.0117) * shown["width"], abs=2.5)  # the bar is its length at the scale
    load(browser, pages["unknown"])
    assert "no scale" in text(browser, "scale-bar")


def test_outline_mode_draws_only_the_lesions_edges(browser, pages):
    load(browser, pages["known"])
    show_slice(browser, 3)
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "overlay-mode")).select_by_value("contour")
    outline = np.asarray(decode(browser.find_element(By.ID, "overlay").get_attribute("src")).convert("RGBA"))[..., 3]
    # slice 3: REA rows 20-29 x columns 10-29 -> an outline of 2 x 20 + 2 x 8 = 56 px; SRF rows 40-44 x 50-57 -> 22 px
    assert (outline > 0).sum() == 56 + 22
    assert outline[25, 20] == 0 and outline[20, 20] == 255  # inside: clear; the edge: opaque
    Select(browser.find_element(By.ID, "overlay-mode")).select_by_value("fill")
    fill = np.asarray(decode(browser.find_element(By.ID, "overlay").get_attribute("src")).convert("RGBA"))[..., 3]
    assert (fill > 0).sum() == 200 + 40


def test_print_view_hides_the_controls(browser, pages):
    load(browser, pages["known"])
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        assert not browser.find_element(By.CSS_SELECTOR, ".controls").is_displayed()
        assert browser.find_element(By.ID, "volumes").is_displayed()
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})


def test_compare_page_shows_the_change_per_lesion_sector_and_cst(browser, tmp_path):
    from reports.html import write_compare_report

    image, labels, det = volume()
    first = grid_quant(labels, "OS", None)
    later = labels.copy()
    later[labels == 1] = 0  # REA resolved; SRF doubled on slice 6
    later[5, 46:51, 50:58] = 2
    second = grid_quant(later, "OS", None)
    second["volume_nl"] = {"REA": 0.0, "SRF": 200 * 0.047 * 0.0039 * 0.0117 * 1000, "PED": 0.0}
    second["thickness_um"] = np.full((Z, W), 290.0, np.float32)
    from metrics.etdrs import etdrs

    second["etdrs"] = etdrs(later, second["thickness_um"], GRID_SPACING, NAMES, "OS", None)
    page = write_compare_report(tmp_path / "c.html", ("V1", "V2"), (first, second), ("V1.html", "V2.html"))
    load(browser, page)
    rows = [
        [td.text for td in r.find_elements(By.TAG_NAME, "td")]
        for r in browser.find_elements(By.CSS_SELECTOR, "#change tbody tr")
    ]
    assert rows[0] == ["REA (nL)", "1.29", "0", "-1.29", "-100%"]
    assert rows[1] == ["SRF (nL)", "0.343", "0.429", "+0.0858", "+25%"]
    assert rows[3] == ["CST (µm)", "300", "290", "-10.0", "-3%"]
    sectors = browser.find_elements(By.CSS_SELECTOR, "#sector-change tbody tr")
    assert len(sectors) == 9
    # the grid sits on the scan's centre (no pit) in both: every change in a sector sums to the lesion's change
    rea = [float(r.find_elements(By.TAG_NAME, "td")[2].text) for r in sectors]
    assert sum(rea) == pytest.approx(-600 * 0.25 * 0.0039 * 0.0625 * 1000, abs=0.05)  # every REA voxel, in the grid
    assert severe(browser) == []


def test_compare_pairs_sectors_by_their_place_in_the_eye_and_copes_without_a_grid(browser, tmp_path):
    """One right eye scanned superior-first, then inferior-first: the top of the first map is the bottom of the
    second, so 'inner superior' must pair the first's top with the second's bottom (review finding). A visit
    without a grid or thickness map leaves the sector table out instead of failing."""
    from metrics.etdrs import etdrs
    from metrics.quantify import quantify
    from reports.html import write_compare_report

    z, w, spacing = 24, 96, (0.25, 0.0039, 0.0625)  # 6 x 6 mm
    labels = np.zeros((z, 4, w), np.uint8)
    top_thin = np.where(np.arange(z)[:, None] < z / 2, 280.0, 320.0) * np.ones((1, w), np.float32)
    visits = []
    for order, thickness in (("superior-first", top_thin), ("inferior-first", top_thin[::-1].copy())):
        q = quantify(labels, spacing, NAMES)
        q.update(scan={"laterality": "OD", "bscan_order": order}, thickness_um=thickness)
        q["etdrs"] = etdrs(labels, thickness, spacing, NAMES, "OD", order)
        visits.append(q)
    page = write_compare_report(tmp_path / "c.html", ("V1", "V2"), tuple(visits), ("V1.html", "V2.html"))
    load(browser, page)
    rows = {
        r.find_elements(By.TAG_NAME, "td")[0].text: [td.text for td in r.find_elements(By.TAG_NAME, "td")]
        for r in browser.find_elements(By.CSS_SELECTOR, "#sector-change tbody tr")
    }
    assert rows["inner superior"][-3:] == ["280", "280", "0"]  # the same place in the eye: no change
    assert rows["outer inferior"][-3:] == ["320", "320", "0"]
    assert browser.find_elements(By.ID, "sectors-warning") == []
    # the second visit without a grid or thickness (a 2-frame scan, no spacing): tables, no crash
    visits[1].update(etdrs=None, thickness_um=None)
    page = write_compare_report(tmp_path / "d.html", ("V1", "V2"), tuple(visits), ("V1.html", "V2.html"))
    load(browser, page)
    assert "a visit has no ETDRS grid" in text(browser, "sectors-note") and severe(browser) == []
