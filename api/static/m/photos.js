/* GridPatrol phone page: photos resized in the browser before they are queued or sent.
 *
 * A phone's camera photo is 3–12 MB; on a weak signal that never arrives. Each chosen file is
 * decoded (a file that is not an image is refused here, by its content, not by its name),
 * drawn on a canvas at most MAX_SIDE px on its long side and encoded as JPEG; the server checks
 * the bytes again (Pillow) and refuses anything over MAX_BYTES.
 */
(function () {
  'use strict';

  var M = window.GPM = window.GPM || {};
  var MAX_SIDE = 1600;
  var MAX_BYTES = 2 * 1024 * 1024;
  var MAX_INPUT_BYTES = 40 * 1024 * 1024;  // larger than any phone photo: refused unread
  var QUALITIES = [0.85, 0.7, 0.55, 0.4];
  M.photoLimits = {maxSide: MAX_SIDE, maxBytes: MAX_BYTES, maxPhotos: 3};

  function problem(zh, en) {
    var err = new Error(zh + ' ' + en);
    err.zh = zh;
    err.en = en;
    return err;
  }

  function decode(file) {
    if (window.createImageBitmap) {
      return createImageBitmap(file, {imageOrientation: 'from-image'}).catch(function () {
        return createImageBitmap(file);
      });
    }
    return new Promise(function (resolve, reject) {
      var url = URL.createObjectURL(file);
      var img = new Image();
      img.onload = function () { URL.revokeObjectURL(url); resolve(img); };
      img.onerror = function () { URL.revokeObjectURL(url); reject(new Error('decode')); };
      img.src = url;
    });
  }

  function encode(canvas, quality) {
    return new Promise(function (resolve) {
      canvas.toBlob(function (blob) { resolve(blob); }, 'image/jpeg', quality);
    });
  }

  /* file → {blob (JPEG), width, height, name}; rejects with .zh/.en saying what is wrong */
  M.resizePhoto = function (file) {
    var name = file.name || 'photo';
    if (file.size === 0) {
      return Promise.reject(problem('文件为空：' + name, 'the file is empty: ' + name));
    }
    if (file.size > MAX_INPUT_BYTES) {
      return Promise.reject(problem('文件过大（' + Math.round(file.size / 1048576) + ' MB）：' +
        name, 'the file is too large (' + Math.round(file.size / 1048576) + ' MB): ' + name));
    }
    return decode(file).then(function (image) {
      var w = image.width, h = image.height;
      if (!w || !h) { throw new Error('empty image'); }
      var scale = Math.min(1, MAX_SIDE / Math.max(w, h));
      var canvas = document.createElement('canvas');
      canvas.width = Math.max(1, Math.round(w * scale));
      canvas.height = Math.max(1, Math.round(h * scale));
      var ctx = canvas.getContext('2d');
      ctx.fillStyle = '#ffffff';  // a transparent PNG becomes white, not black, in JPEG
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
      if (image.close) { image.close(); }
      var attempt = function (i) {
        return encode(canvas, QUALITIES[i]).then(function (blob) {
          if (blob && blob.size <= MAX_BYTES) {
            return {blob: blob, width: canvas.width, height: canvas.height,
                    name: name.replace(/\.[^.]*$/, '') + '.jpg'};
          }
          if (i + 1 < QUALITIES.length) { return attempt(i + 1); }
          throw problem('照片压缩后仍超过 2 MB：' + name,
                        'the photo is still over 2 MB after resizing: ' + name);
        });
      };
      return attempt(0);
    }, function () {
      throw problem('不是图片，无法读取：' + name, 'not an image (cannot be read as one): ' + name);
    });
  };
}());
